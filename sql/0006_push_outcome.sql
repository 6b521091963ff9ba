-- 0006_push_outcome: what happened to a device's last push.
--
-- An operator asking "why does this phone not wake?" needs the answer the
-- provider gave last time, not only the token (GET /v1/devices/{device}).
-- The push service keeps the outcome of every push to a registered device
-- (wakes and POST /v1/push alike) and writes them in batches, about once a
-- second (queue_devices_push_outcomes()), so these columns trail the push by
-- that much and a crash may lose the last second of them: they are for
-- looking, not for deciding.
--
--   push_last           when the push was sent (the provider's answer came
--                       at most the send timeout later)
--   push_last_provider  'apns' or 'fcm'
--   push_last_outcome   'ok', 'token_invalid' (the token was removed),
--                       'failed' (transient: retried, or given up after the
--                       attempts) or 'rejected' (the provider refused this
--                       push or the app's credentials)
--   push_last_status    the provider's HTTP status; 0 when there was none
--                       (a transport error)
--   push_last_reason    the provider's reason ("BadDeviceToken",
--                       "UNREGISTERED", ...), NULL for 'ok'
--
-- They are kept when the token is removed or replaced: the outcome that
-- removed a token is the one an operator wants to see. Writing them is an
-- update of columns without an index, which PostgreSQL does in place (HOT).
-- Adding nullable columns without defaults rewrites nothing.

ALTER TABLE devices
	ADD COLUMN push_last          timestamptz,
	ADD COLUMN push_last_provider text
		CHECK (push_last_provider IN ('apns', 'fcm')),
	ADD COLUMN push_last_outcome  text
		CHECK (push_last_outcome IN ('ok', 'token_invalid', 'failed', 'rejected')),
	ADD COLUMN push_last_status   smallint
		CHECK (push_last_status BETWEEN 0 AND 999),
	ADD COLUMN push_last_reason   text
		CHECK (octet_length(push_last_reason) BETWEEN 1 AND 64),
	-- All of them or none.
	ADD CHECK ((push_last IS NULL) = (push_last_provider IS NULL)
		   AND (push_last IS NULL) = (push_last_outcome IS NULL)
		   AND (push_last IS NULL) = (push_last_status IS NULL));
