-- 0004_receipts: delivery and read receipts in the envelope store.
--
-- A receipt for a device that is away waits in envelopes like a message,
-- in the same ordered stream, as a row of kind 'receipt':
--   sender_user    the peer user: who received or read the messages
--   sender_device  the device of the recipient's own user that sent the
--                  messages (0: the reader named none)
--   client_id      the receipt's kind: 1 delivered, 2 read
--   payload        the messages' client ids, as protocol varints back to back
--   server_id      what the device acknowledges, as for a message
-- Receipts are coalesced here too: a receipt PUT merges its ids into the
-- device's newest row of the same (peer user, sending device, kind) while
-- the merged ids fit in 512 bytes (so at most 512 ids: one DELIVER_RECEIPT),
-- else it starts a new row. A merged row takes the PUT's server id and the
-- device's next sequence number, as if it were new: a copy of the row that
-- was already sent and is acknowledged late (by the old server id) then
-- deletes nothing, and a connection catching up past the old place fetches
-- it again at the new one. Ids may repeat; applying a receipt is idempotent.
-- A merge adds no row, so it is never 'full'; receipts are never 'duplicate'.

-- The retransmission key is a message's only: receipt rows repeat
-- (recipient_device, sender_device, client_id) by design.
DO $$
DECLARE
	c record;
BEGIN
	FOR c IN
		SELECT con.conname FROM pg_constraint con
		 WHERE con.contype = 'u' AND con.conrelid = 'envelopes'::regclass
	LOOP
		EXECUTE format('ALTER TABLE envelopes DROP CONSTRAINT %I', c.conname);
	END LOOP;
END
$$;

CREATE UNIQUE INDEX envelopes_message_key ON envelopes (recipient_device, sender_device, client_id)
	WHERE kind = 'message';
CREATE INDEX envelopes_receipt_key ON envelopes (recipient_device, sender_device, client_id,
						 sender_user, seq)
	WHERE kind = 'receipt';

-- ferry_put_batch's work for the messages of a batch, as in 0003 (the
-- receipts' recipients are left out; the caller holds the device locks).
-- One row per message recipient, with its place (o_ord) among the batch's
-- recipients.
CREATE FUNCTION ferry_put_messages(p_rcpt bigint[], p_rput integer[], p_server_id bigint[],
				   p_sender_user text[], p_sender_device bigint[],
				   p_client_id bigint[], p_kind text[], p_payloads bytea,
				   p_len integer[], p_created_ms bigint[], p_ttl integer[],
				   p_max_pending bigint)
RETURNS TABLE (o_ord bigint, o_put integer, o_recipient bigint, o_result text,
	       o_server_id bigint, o_seq bigint)
LANGUAGE plpgsql SET jit = off AS $$
BEGIN
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
		 WHERE p.kind = 'message'
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
					AND ev.kind = 'message'
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
	SELECT s.ord, s.put::integer, s.r,
	       coalesce(s.result, CASE f.result WHEN 'stored' THEN 'duplicate' ELSE f.result END),
	       coalesce(s.sid, f.sid), coalesce(s.seq, f.seq)
	  FROM res s
	  LEFT JOIN res f ON s.occ > 1 AND f.occ = 1 AND f.r = s.r AND f.sdev = s.sdev
	       AND f.cid = s.cid
	 ORDER BY s.ord;
END
$$;

-- Store a batch of envelopes, as in 0002 and 0003, now with receipts (see
-- the top of this file). Receipts take their sequence numbers after the
-- batch's messages; their order among themselves is the batch's.
CREATE OR REPLACE FUNCTION ferry_put_batch(p_rcpt bigint[], p_rput integer[],
					   p_server_id bigint[], p_sender_user text[],
					   p_sender_device bigint[], p_client_id bigint[],
					   p_kind text[], p_payloads bytea, p_len integer[],
					   p_created_ms bigint[], p_ttl integer[],
					   p_max_pending bigint)
RETURNS TABLE (o_put integer, o_recipient bigint, o_result text, o_server_id bigint,
	       o_seq bigint)
LANGUAGE plpgsql SET jit = off AS $$
DECLARE
	r_ord bigint[];
	r_put integer[];
	r_rcpt bigint[];
	r_res text[];
	r_sid bigint[];
	r_seq bigint[];
	x record;
	d record;
	e record;
	res text;
BEGIN
	PERFORM 1 FROM devices WHERE id IN (SELECT unnest(p_rcpt)) ORDER BY id
	    FOR NO KEY UPDATE;
	IF NOT 'receipt' = ANY (p_kind) THEN
		RETURN QUERY
		SELECT m.o_put, m.o_recipient, m.o_result, m.o_server_id, m.o_seq
		  FROM ferry_put_messages(p_rcpt, p_rput, p_server_id, p_sender_user,
					  p_sender_device, p_client_id, p_kind, p_payloads, p_len,
					  p_created_ms, p_ttl, p_max_pending) m
		 ORDER BY m.o_ord;
		RETURN;
	END IF;
	SELECT coalesce(array_agg(m.o_ord), '{}'), coalesce(array_agg(m.o_put), '{}'),
	       coalesce(array_agg(m.o_recipient), '{}'), coalesce(array_agg(m.o_result), '{}'),
	       coalesce(array_agg(m.o_server_id), '{}'), coalesce(array_agg(m.o_seq), '{}')
	  INTO r_ord, r_put, r_rcpt, r_res, r_sid, r_seq
	  FROM ferry_put_messages(p_rcpt, p_rput, p_server_id, p_sender_user, p_sender_device,
				  p_client_id, p_kind, p_payloads, p_len, p_created_ms, p_ttl,
				  p_max_pending) m;
	FOR x IN
		WITH puts AS (
			SELECT u.i, u.sid, u.suser, u.sdev, u.cid, u.kind, u.len,
			       (sum(u.len) OVER (ORDER BY u.i) - u.len)::integer AS poff,
			       CASE WHEN u.cms > 0
				    THEN timestamptz 'epoch' + u.cms * interval '1 millisecond'
				    ELSE now() END AS created,
			       greatest(u.ttl, 1) AS ttl
			  FROM unnest(p_server_id, p_sender_user, p_sender_device, p_client_id,
				      p_kind, p_len, p_created_ms, p_ttl)
			       WITH ORDINALITY AS u(sid, suser, sdev, cid, kind, len, cms, ttl, i)
		)
		SELECT t.ord, t.r, t.put::integer AS put, p.sid, p.suser, p.sdev, p.cid,
		       substring(p_payloads FROM p.poff + 1 FOR p.len) AS ids, p.created,
		       p.created + p.ttl * interval '1 second' AS expires
		  FROM unnest(p_rcpt, p_rput) WITH ORDINALITY AS t(r, put, ord)
		  JOIN puts p ON p.i = t.put
		 WHERE p.kind = 'receipt'
		 ORDER BY t.ord
	LOOP
		SELECT dv.next_seq, dv.pending INTO d FROM devices dv WHERE dv.id = x.r;
		IF NOT FOUND THEN
			r_ord := r_ord || x.ord; r_put := r_put || x.put; r_rcpt := r_rcpt || x.r;
			r_res := r_res || 'gone'::text; r_sid := r_sid || NULL::bigint;
			r_seq := r_seq || NULL::bigint;
			CONTINUE;
		END IF;
		SELECT ev.seq, ev.payload INTO e FROM envelopes ev
		 WHERE ev.recipient_device = x.r AND ev.sender_device = x.sdev
		   AND ev.client_id = x.cid AND ev.sender_user = x.suser AND ev.kind = 'receipt'
		 ORDER BY ev.seq DESC LIMIT 1;
		IF FOUND AND octet_length(e.payload) + octet_length(x.ids) <= 512 THEN
			UPDATE envelopes SET seq = d.next_seq, server_id = x.sid,
					     payload = e.payload || x.ids,
					     expires = greatest(expires, x.expires)
			 WHERE recipient_device = x.r AND seq = e.seq;
			UPDATE devices SET next_seq = next_seq + 1 WHERE id = x.r;
			res := 'stored';
		ELSIF d.pending >= p_max_pending THEN
			res := 'full';
		ELSE
			INSERT INTO envelopes (recipient_device, seq, server_id, sender_user,
					       sender_device, client_id, kind, payload, created,
					       expires)
			VALUES (x.r, d.next_seq, x.sid, x.suser, x.sdev, x.cid, 'receipt', x.ids,
				x.created, x.expires);
			UPDATE devices SET next_seq = next_seq + 1, pending = pending + 1
			 WHERE id = x.r;
			res := 'stored';
		END IF;
		r_ord := r_ord || x.ord; r_put := r_put || x.put; r_rcpt := r_rcpt || x.r;
		r_res := r_res || res;
		r_sid := r_sid || CASE WHEN res = 'stored' THEN x.sid END;
		r_seq := r_seq || CASE WHEN res = 'stored' THEN d.next_seq END;
	END LOOP;
	RETURN QUERY
	SELECT u.put, u.rcpt, u.res, u.sid, u.seq
	  FROM unnest(r_ord, r_put, r_rcpt, r_res, r_sid, r_seq) AS u(ord, put, rcpt, res, sid, seq)
	 ORDER BY u.ord;
END
$$;
