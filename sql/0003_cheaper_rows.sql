-- 0003_cheaper_rows: what PostgreSQL spends on each stored envelope, less.
--
-- A profile of the store's writer put about a third of its time in two
-- things that check nothing the store does not already guarantee:
--
--   * The name CHECKs. `~ '^[A-Za-z0-9._:@+-]{1,64}$'` is slow in
--     PostgreSQL's regex engine (the counted repetition), and it runs for
--     every envelope (sender_user) and every device row a batch updates
--     (user_id). The same rule, written as a length test and a regex without
--     the count, costs a fraction: the class is ASCII only, so a matching
--     string has as many characters as bytes, and `^`/`$` anchor the whole
--     string. NULL passes both forms alike (push_app).
--   * The foreign key envelopes -> devices, a trigger query per inserted row.
--     Its two jobs are done elsewhere: the store writes envelopes only through
--     ferry_put_batch, which locks the recipients' device rows and answers
--     'gone' for a device that does not exist; and a device's envelopes are
--     deleted with it by ferry_device_delete (below, what the admin API's
--     device deletion calls) instead of ON DELETE CASCADE.
--
-- Why no envelope can outlive its device (READ COMMITTED, the default; each
-- statement of these plpgsql functions takes a fresh snapshot):
--
--   ferry_put_batch locks the devices FOR NO KEY UPDATE, then, in a second
--   statement, inserts rows only for devices it finds, and keeps the locks
--   until it commits. ferry_device_delete first DELETEs the device row, which
--   takes the row's strongest lock (it conflicts with FOR NO KEY UPDATE),
--   then, in a second statement, deletes the device's envelopes.
--     - Batch first: the DELETE of the device waits for the batch to commit.
--       The envelope DELETE then starts with a new snapshot, which sees the
--       batch's rows, and removes them.
--     - Deletion first: the batch's lock waits for the deletion to commit,
--       then skips the row (deleted); the batch's main statement starts with
--       a new snapshot, finds no device, answers 'gone' and inserts nothing.
--   A device that the main statement finds but the lock did not see would
--   have to be created, with an id the batch already names, between the two
--   statements; ids are GENERATED ALWAYS, and a batch names only devices that
--   existed when it was built.
--   Under REPEATABLE READ or SERIALIZABLE the crossing transactions fail with
--   a serialization error instead (a batch that stored rows for a device has
--   updated its row), and nothing is left behind either.
--
-- Rows written by hand (tests, operators) are no longer checked against
-- devices, and a plain DELETE FROM devices leaves the device's envelopes:
-- delete devices with ferry_device_delete.
--
-- Applied in one transaction; adding the CHECKs reads both tables once, under
-- an exclusive lock.

-- The constraints are found in the catalog (0001 left them unnamed): the
-- CHECK on each column whose text has the counted repetition, and the
-- foreign key from envelopes to devices.
DO $$
DECLARE
	c record;
BEGIN
	FOR c IN
		SELECT con.conrelid::regclass AS tab, con.conname
		  FROM pg_constraint con
		  JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = con.conkey[1]
		 WHERE con.contype = 'c' AND cardinality(con.conkey) = 1
		   AND (con.conrelid, a.attname) IN (('devices'::regclass, 'user_id'),
						     ('devices'::regclass, 'push_app'),
						     ('envelopes'::regclass, 'sender_user'))
		   AND pg_get_constraintdef(con.oid) LIKE '%{1,64}%'
	LOOP
		EXECUTE format('ALTER TABLE %s DROP CONSTRAINT %I', c.tab, c.conname);
	END LOOP;
	FOR c IN
		SELECT con.conname FROM pg_constraint con
		 WHERE con.contype = 'f' AND con.conrelid = 'envelopes'::regclass
		   AND con.confrelid = 'devices'::regclass
	LOOP
		EXECUTE format('ALTER TABLE envelopes DROP CONSTRAINT %I', c.conname);
	END LOOP;
END
$$;

ALTER TABLE devices
	ADD CONSTRAINT devices_user_id_check
	CHECK (octet_length(user_id) BETWEEN 1 AND 64 AND user_id ~ '^[A-Za-z0-9._:@+-]+$'),
	ADD CONSTRAINT devices_push_app_check
	CHECK (octet_length(push_app) BETWEEN 1 AND 64 AND push_app ~ '^[A-Za-z0-9._:@+-]+$');

ALTER TABLE envelopes
	ADD CONSTRAINT envelopes_sender_user_check
	CHECK (octet_length(sender_user) BETWEEN 1 AND 64
	       AND sender_user ~ '^[A-Za-z0-9._:@+-]+$');

-- Delete device @p_device and its envelopes; false when there was no such
-- device. Two statements on purpose (see above): the device row first, which
-- waits for a batch holding its lock, then the envelopes, with a snapshot
-- taken after that batch committed.
CREATE FUNCTION ferry_device_delete(p_device bigint) RETURNS boolean
LANGUAGE plpgsql AS $$
BEGIN
	DELETE FROM devices WHERE id = p_device;
	IF NOT FOUND THEN
		RETURN false;
	END IF;
	DELETE FROM envelopes WHERE recipient_device = p_device;
	RETURN true;
END
$$;

-- ferry_put_batch as in 0002, but for how the devices are locked: `id = ANY
-- (p_rcpt)` tests each device row against the whole array once the plan is
-- generic (plpgsql's cached plan, where the array is a parameter), a cost of
-- devices times recipients; a semi-join against the unnested array is
-- linear, and an index probe per recipient on a large table.
CREATE OR REPLACE FUNCTION ferry_put_batch(p_rcpt bigint[], p_rput integer[],
					   p_server_id bigint[], p_sender_user text[],
					   p_sender_device bigint[], p_client_id bigint[],
					   p_kind text[], p_payloads bytea, p_len integer[],
					   p_created_ms bigint[], p_ttl integer[],
					   p_max_pending bigint)
RETURNS TABLE (o_put integer, o_recipient bigint, o_result text, o_server_id bigint,
	       o_seq bigint)
-- As in 0002: compiling the plan would cost more than the batch itself.
LANGUAGE plpgsql SET jit = off AS $$
BEGIN
	PERFORM 1 FROM devices WHERE id IN (SELECT unnest(p_rcpt)) ORDER BY id
	    FOR NO KEY UPDATE;
	RETURN QUERY
	WITH puts AS MATERIALIZED (
		SELECT u.i, u.sid, u.suser, u.sdev, u.cid, u.kind, u.len,
		       (sum(u.len) OVER (ORDER BY u.i) - u.len)::integer AS poff,
		       CASE WHEN u.cms > 0
			    THEN timestamptz 'epoch' + u.cms * interval '1 millisecond'
			    ELSE now() END AS created,
		       greatest(u.ttl, 1) AS ttl
		  FROM unnest(p_server_id, p_sender_user, p_sender_device, p_client_id, p_kind,
			      p_len, p_created_ms, p_ttl)
		       WITH ORDINALITY AS u(sid, suser, sdev, cid, kind, len, cms, ttl, i)
	), cand AS MATERIALIZED (
		-- occ > 1: the same envelope for the same device earlier in the batch.
		SELECT x.put, x.ord, x.r, p.sid, p.sdev, p.cid,
		       row_number() OVER (PARTITION BY x.r, p.sdev, p.cid ORDER BY x.ord) AS occ
		  FROM unnest(p_rcpt, p_rput) WITH ORDINALITY AS x(r, put, ord)
		  JOIN puts p ON p.i = x.put
	), known AS (
		-- LATERAL: one index probe per row, never a scan of the tables.
		SELECT c.*, d.next_seq, d.pending, e.server_id AS ex_sid, e.seq AS ex_seq,
		       d.id IS NOT NULL AS dev_ok,
		       (d.id IS NOT NULL AND c.occ = 1 AND e.server_id IS NULL) AS fresh
		  FROM cand c
		  LEFT JOIN LATERAL (SELECT dv.id, dv.next_seq, dv.pending FROM devices dv
				      WHERE dv.id = c.r LIMIT 1) d ON true
		  LEFT JOIN LATERAL (SELECT ev.server_id, ev.seq FROM envelopes ev
				      WHERE c.occ = 1 AND ev.recipient_device = c.r
					AND ev.sender_device = c.sdev AND ev.client_id = c.cid
				      LIMIT 1) e ON true
	), res AS MATERIALIZED (
		-- rk: the place of a new envelope among the device's new ones.
		SELECT k.put, k.ord, k.r, k.sdev, k.cid, k.occ,
		       CASE WHEN NOT k.dev_ok THEN 'gone'
			    WHEN k.occ > 1 THEN NULL
			    WHEN NOT k.fresh THEN 'duplicate'
			    WHEN k.pending + k.rk <= p_max_pending THEN 'stored'
			    ELSE 'full' END AS result,
		       CASE WHEN NOT k.dev_ok OR k.occ > 1 THEN NULL
			    WHEN NOT k.fresh THEN k.ex_sid
			    WHEN k.pending + k.rk <= p_max_pending THEN k.sid END AS sid,
		       CASE WHEN NOT k.dev_ok OR k.occ > 1 THEN NULL
			    WHEN NOT k.fresh THEN k.ex_seq
			    WHEN k.pending + k.rk <= p_max_pending
			    THEN k.next_seq + k.rk - 1 END AS seq
		  FROM (SELECT kn.*, row_number() OVER (PARTITION BY kn.r, kn.fresh
							ORDER BY kn.ord) AS rk
			  FROM known kn) k
	), ins AS (
		INSERT INTO envelopes (recipient_device, seq, server_id, sender_user,
				       sender_device, client_id, kind, payload, created, expires)
		SELECT s.r, s.seq, s.sid, p.suser, p.sdev, p.cid, p.kind,
		       substring(p_payloads FROM p.poff + 1 FOR p.len), p.created,
		       p.created + p.ttl * interval '1 second'
		  FROM res s JOIN puts p ON p.i = s.put
		 WHERE s.result = 'stored'
	), upd AS (
		UPDATE devices d SET next_seq = d.next_seq + n.n, pending = d.pending + n.n
		  FROM (SELECT res.r, count(*) AS n FROM res WHERE res.result = 'stored'
			 GROUP BY res.r) n
		 WHERE d.id = n.r
	)
	-- A repeat within the batch answers like the first: stored means duplicate.
	SELECT s.put::integer, s.r,
	       coalesce(s.result, CASE f.result WHEN 'stored' THEN 'duplicate' ELSE f.result END),
	       coalesce(s.sid, f.sid), coalesce(s.seq, f.seq)
	  FROM res s
	  LEFT JOIN res f ON s.occ > 1 AND f.occ = 1 AND f.r = s.r AND f.sdev = s.sdev
	       AND f.cid = s.cid
	 ORDER BY s.ord;
END
$$;
