-- 0001_init: devices and the envelope store.
--
-- Every table is keyed by the device that receives (or owns) the row, so
-- that the data can later be distributed on that key. Applied by
-- `ferryd migrate` inside one transaction, with its row in schema_version.

CREATE TABLE devices (
	id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
	user_id         text        NOT NULL
	                CHECK (user_id ~ '^[A-Za-z0-9._:@+-]{1,64}$'),
	secret_hash     bytea       NOT NULL CHECK (octet_length(secret_hash) = 32),
	platform        text        NOT NULL
	                CHECK (platform IN ('ios', 'android', 'desktop', 'web')),
	push_provider   text        CHECK (push_provider IN ('apns', 'fcm')),
	push_token      text        CHECK (octet_length(push_token) BETWEEN 1 AND 4096),
	push_app        text        CHECK (push_app ~ '^[A-Za-z0-9._:@+-]{1,64}$'),
	apns_topic      text        CHECK (octet_length(apns_topic) BETWEEN 1 AND 255),
	push_environment text       CHECK (push_environment IN ('production', 'sandbox')),
	push_updated    timestamptz,
	created         timestamptz NOT NULL DEFAULT now(),
	last_seen       timestamptz,
	-- Next per-device envelope sequence number: delivery order is the order
	-- of this sequence, which is the order of acceptance.
	next_seq        bigint      NOT NULL DEFAULT 1 CHECK (next_seq > 0),
	-- A push token comes whole (provider, token, environment, time) or not at all.
	CHECK ((push_token IS NULL) = (push_provider IS NULL)),
	CHECK ((push_token IS NULL) = (push_environment IS NULL)),
	CHECK ((push_token IS NULL) = (push_updated IS NULL)),
	CHECK (push_token IS NOT NULL OR (push_app IS NULL AND apns_topic IS NULL)),
	CHECK (apns_topic IS NULL OR push_provider = 'apns')
);

CREATE INDEX devices_user_idx ON devices (user_id, id);

CREATE TABLE envelopes (
	recipient_device bigint     NOT NULL REFERENCES devices (id) ON DELETE CASCADE,
	seq              bigint     NOT NULL CHECK (seq > 0),
	sender_user      text       NOT NULL
	                 CHECK (sender_user ~ '^[A-Za-z0-9._:@+-]{1,64}$'),
	-- 0 for envelopes the server itself originates (admin API).
	sender_device    bigint     NOT NULL CHECK (sender_device >= 0),
	client_id        bigint     NOT NULL,
	kind             text       NOT NULL CHECK (kind IN ('message', 'receipt')),
	payload          bytea      NOT NULL,
	created          timestamptz NOT NULL DEFAULT now(),
	expires          timestamptz NOT NULL,
	CHECK (expires > created),
	-- "next N envelopes for a device, in order" and "delete these seqs".
	PRIMARY KEY (recipient_device, seq),
	-- A retransmitted SEND is recognised, also after a restart.
	UNIQUE (recipient_device, sender_device, client_id)
);

-- Background expiry scans in bounded batches, oldest first.
CREATE INDEX envelopes_expires_idx ON envelopes (expires);
