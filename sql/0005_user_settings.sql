-- 0005_user_settings: per-user settings, starting with read receipts.
--
-- ferry has no table of users: a user exists through its devices
-- (devices.user_id). Settings are kept per user id all the same, and only
-- for users whose settings an operator wrote (PUT /v1/users/{user}/settings):
-- a user without a row has the column defaults below. So a user's settings
-- are read with a LEFT JOIN and coalesce() to the same defaults, and a new
-- setting is a new column with a DEFAULT, which leaves every existing user
-- on it.
--
-- A row is not tied to the user's devices (no foreign key: devices.user_id
-- is not unique). Settings may be written before the user's first device
-- is registered, and they outlive the user's last device, so a user id that
-- registers devices again finds its settings as they were.
--
--   read_receipts  false when the user switched read receipts off: the
--                  gateway then acknowledges the RECEIPTs of the user's
--                  devices without passing them on (docs/protocol.md). The
--                  gateway reads it with a device's credentials at the
--                  handshake (queue_device_auth) and is told of changes by
--                  the admin API.
--   updated        when the row was last written.
--
-- Applied in one transaction; creating an empty table locks nothing else.

CREATE TABLE user_settings (
	user_id         text        PRIMARY KEY
	                CONSTRAINT user_settings_user_id_check
	                CHECK (octet_length(user_id) BETWEEN 1 AND 64
	                       AND user_id ~ '^[A-Za-z0-9._:@+-]+$'),
	read_receipts   boolean     NOT NULL DEFAULT true,
	updated         timestamptz NOT NULL DEFAULT now()
);
