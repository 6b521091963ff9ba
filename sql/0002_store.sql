-- 0002_store: what the offline envelope store (queue/store*.c) needs.
--
-- The store writes envelopes only through the functions below: a batch of
-- PUTs is one ferry_put_batch call in one transaction; DELETEs and expiry
-- sweeps are one call each (pipelined, many per round trip).
--
-- Invariants:
--   * devices.pending is the number of the device's rows in envelopes. Every
--     writer keeps it: ferry_put_batch (+n), ferry_delete and ferry_expire (-n); a
--     device's deletion removes its rows and its counter together. Rows
--     written by hand (tests) leave it stale.
--   * Lock order: a transaction that writes envelopes first locks the rows of
--     the devices concerned, in ascending id order (ferry_put_batch,
--     ferry_delete, ferry_expire), then touches envelopes. Writers that follow
--     it cannot deadlock with each other.
--   * Unsigned 64-bit ids (server ids, client ids) are stored as the bigint
--     with the same bits: the store converts both ways.

-- The server id the gateway gave the envelope: what DELIVER carries and what
-- DELIVER_ACK names. 0: not given (rows inserted by hand).
ALTER TABLE envelopes ADD COLUMN server_id bigint NOT NULL DEFAULT 0;

-- DELIVER_ACKs become "delete these server ids of this device".
CREATE INDEX envelopes_server_id_idx ON envelopes (recipient_device, server_id);

-- Envelopes waiting for the device: [store] max_pending_per_device is checked
-- against it without counting rows.
ALTER TABLE devices ADD COLUMN pending bigint NOT NULL DEFAULT 0 CHECK (pending >= 0);

UPDATE devices d SET pending = (SELECT count(*) FROM envelopes e WHERE e.recipient_device = d.id);

-- Store a batch of envelopes, as if one after the other: PUT i (1-based)
-- carries element i of the per-PUT arrays; its payload is the next @p_len[i]
-- bytes of @p_payloads; @p_rcpt lists every PUT's recipients in order, and
-- @p_rput[j] names the PUT that @p_rcpt[j] belongs to. One row per
-- recipient, in @p_rcpt's order:
--   'stored'    with the PUT's server id and the device's next sequence number;
--   'duplicate' with the server id and seq of the envelope stored before with
--               the same (recipient, sender device, client id) - before this
--               batch or earlier in it: nothing stored;
--   'full'      the device has @p_max_pending envelopes: nothing stored;
--   'gone'      no such device.
-- Only stored rows take sequence numbers, so a device's sequence has no gaps.
-- Creation time @p_created_ms[i] 0 means now(); an envelope expires
-- @p_ttl[i] seconds (at least 1) after its creation.
--
-- Set-based on purpose: the devices' rows are locked first (id order), read
-- once and updated once per batch, whatever the batch holds for them.
-- Without ON CONFLICT: a row that should not be stored fails the batch
-- rather than being reported stored.
CREATE FUNCTION ferry_put_batch(p_rcpt bigint[], p_rput integer[], p_server_id bigint[],
				p_sender_user text[], p_sender_device bigint[],
				p_client_id bigint[], p_kind text[], p_payloads bytea,
				p_len integer[], p_created_ms bigint[], p_ttl integer[],
				p_max_pending bigint)
RETURNS TABLE (o_put integer, o_recipient bigint, o_result text, o_server_id bigint,
	       o_seq bigint)
-- The plan's estimates can pass jit_above_cost; compiling costs more than the
-- batch itself.
LANGUAGE plpgsql SET jit = off AS $$
BEGIN
	PERFORM 1 FROM devices WHERE id = ANY (p_rcpt) ORDER BY id FOR NO KEY UPDATE;
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

-- Delete the envelopes with server ids @ids of device @device (it
-- acknowledged them); returns how many there were.
CREATE FUNCTION ferry_delete(p_device bigint, p_ids bigint[]) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	n bigint;
BEGIN
	PERFORM 1 FROM devices WHERE id = p_device FOR NO KEY UPDATE;
	IF NOT FOUND THEN
		RETURN 0;
	END IF;
	DELETE FROM envelopes WHERE recipient_device = p_device AND server_id = ANY (p_ids);
	GET DIAGNOSTICS n = ROW_COUNT;
	IF n > 0 THEN
		UPDATE devices SET pending = pending - n WHERE id = p_device;
	END IF;
	RETURN n;
END
$$;

-- Delete up to @max_rows expired envelopes, oldest first (the expires index);
-- returns how many. Called again while it returns @max_rows.
CREATE FUNCTION ferry_expire(p_max_rows integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
	devs bigint[];
	seqs bigint[];
	n bigint;
BEGIN
	SELECT array_agg(recipient_device), array_agg(seq) INTO devs, seqs
	  FROM (SELECT recipient_device, seq FROM envelopes WHERE expires < now()
		 ORDER BY expires LIMIT p_max_rows) c;
	IF devs IS NULL THEN
		RETURN 0;
	END IF;
	PERFORM 1 FROM devices WHERE id = ANY (devs) ORDER BY id FOR NO KEY UPDATE;
	WITH d AS (
		DELETE FROM envelopes e USING unnest(devs, seqs) AS x(dev, sq)
		 WHERE e.recipient_device = x.dev AND e.seq = x.sq AND e.expires < now()
		RETURNING e.recipient_device
	), g AS (
		SELECT recipient_device, count(*) AS c FROM d GROUP BY recipient_device
	), u AS (
		UPDATE devices SET pending = pending - g.c FROM g
		 WHERE devices.id = g.recipient_device
	)
	SELECT coalesce(sum(c), 0) INTO n FROM g;
	RETURN n;
END
$$;
