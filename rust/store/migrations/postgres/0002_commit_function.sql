-- One scheduler batch in one round trip: `cloacina_commit` applies a batch of ops (a
-- JSON array, parsed once as jsonb, built by `store/postgres/write.rs`) as a single statement, hence a single
-- transaction, where sending each op as a statement of an explicit transaction cost a
-- network round trip each (five for a task of a chain: BEGIN, the fence, finishing one
-- task, starting the next, COMMIT).
--
-- The fence: the runs the batch drives (`touched`) must still be owned by `me`, at the
-- epoch `epochs` names for each (when it names one). The ops of a run that is not are
-- skipped (hook errors and events excepted), and the run is reported in `lost`. The
-- batch first takes a shared transaction-level advisory lock per run (`cloacina_run_key`),
-- which a claim takes exclusively (`cloacina_claim`): a claim waits for a batch in
-- flight to commit, and a batch after the claim reads the new owner. An advisory lock
-- lives in the server's lock table only, where locking the run's row would write it
-- (and its WAL) at every batch. A new run whose idempotency key another run holds is not inserted;
-- its ops are skipped and it is reported in `dups` with the existing run's id.
-- Leases arrive as microseconds from now and are stored on the database's clock.
-- The advisory-lock key of run `run` in the current schema.
CREATE FUNCTION cloacina_run_key(run text) RETURNS bigint LANGUAGE sql STABLE AS $$
    SELECT hashtextextended(current_schema() || ':run:' || run, 0)
$$;

CREATE FUNCTION cloacina_commit(ops jsonb, me text, touched text[], epochs jsonb)
RETURNS json LANGUAGE plpgsql AS $$
DECLARE
    op jsonb;
    i int;
    k text;
    run text;
    r record;
    n bigint;
    existing text;
    lost text[] := '{}';
    dup_runs text[] := '{}';
    dups json[] := '{}';
    now_us bigint := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
BEGIN
    IF cardinality(touched) > 0 THEN
        PERFORM pg_advisory_xact_lock_shared(cloacina_run_key(t)) FROM unnest(touched) AS t;
        -- A statement of its own, so its snapshot is taken once the locks are held.
        FOR r IN SELECT run_id, owner, owner_epoch FROM runs WHERE run_id = ANY(touched) LOOP
            IF r.owner IS DISTINCT FROM me
               OR (epochs->>r.run_id IS NOT NULL AND (epochs->>r.run_id)::bigint <> r.owner_epoch) THEN
                lost := lost || r.run_id;
            END IF;
        END LOOP;
    END IF;
    -- Indexed access: a FOR over a query would open a cursor for every batch.
    FOR i IN 0 .. jsonb_array_length(ops) - 1 LOOP
        op := ops->i;
        k := op->>'k';
        run := op->>'run';
        IF run = ANY(dup_runs) OR (run = ANY(lost) AND k NOT IN ('he', 'ev', 'ir', 'rl')) THEN
            CONTINUE;
        END IF;
        CASE k
        WHEN 'ir' THEN  -- a new run: started by `owner`, or queued (no owner)
            INSERT INTO runs (run_id, workflow, version, status, input, owner, created_at, started_at,
                              lease_expires_at, idempotency_key)
            VALUES (run, op->>'wf', op->>'ver',
                    CASE WHEN op->>'owner' IS NULL THEN 'queued' ELSE 'running' END,
                    op->>'input', op->>'owner', (op->>'at')::bigint,
                    CASE WHEN op->>'owner' IS NULL THEN NULL ELSE (op->>'at')::bigint END,
                    CASE WHEN op->>'owner' IS NULL THEN NULL ELSE now_us + (op->>'lease')::bigint END,
                    op->>'key')
            ON CONFLICT DO NOTHING;
            GET DIAGNOSTICS n = ROW_COUNT;
            IF n = 0 THEN
                -- This very run (a retried batch whose first commit went through), or
                -- another run holding the key.
                SELECT run_id INTO existing FROM runs
                WHERE run_id = run OR idempotency_key = op->>'key'
                ORDER BY (run_id = run) DESC LIMIT 1;
                IF existing IS NOT NULL AND existing <> run THEN
                    dup_runs := dup_runs || run;
                    dups := dups || json_build_array(run, existing);
                END IF;
            END IF;
        WHEN 'rl' THEN  -- renew the leases of the owner's running runs
            UPDATE runs SET lease_expires_at = now_us + (op->>'lease')::bigint
            WHERE owner = op->>'owner' AND status = 'running';
        WHEN 'ev' THEN
            INSERT INTO run_events (run_id, at, kind, detail)
            VALUES (run, (op->>'at')::bigint, op->>'kind', op->>'detail');
        WHEN 'ro' THEN  -- reopen a final run (resume)
            UPDATE runs SET status = 'running', error = NULL, finished_at = NULL, owner = op->>'owner',
                   lease_expires_at = now_us + (op->>'lease')::bigint, cancel_requested_at = NULL
            WHERE run_id = run;
        WHEN 'rt' THEN  -- reset a task to run again (resume): its latest attempt is kept
            INSERT INTO earlier_attempts (run_id, task_id, attempt, status, owner, started_at,
                                          finished_at, error, traceback)
            SELECT run_id, task_id, attempt, status, owner, started_at, finished_at, error, traceback
            FROM task_attempts WHERE run_id = run AND task_id = op->>'task'
            ON CONFLICT DO NOTHING;
            UPDATE run_tasks SET status = 'pending', reason = NULL, error = NULL, traceback = NULL,
                   output = NULL, finished_at = NULL, ready_at = NULL
            WHERE run_id = run AND task_id = op->>'task';
        WHEN 'pt' THEN  -- a task's place in a run planned again
            UPDATE run_tasks SET position = (op->>'pos')::int, dependencies = op->>'deps'
            WHERE run_id = run AND task_id = op->>'task';
        WHEN 'sv' THEN
            UPDATE runs SET version = op->>'ver' WHERE run_id = run;
        WHEN 'it' THEN
            INSERT INTO run_tasks (run_id, task_id, position, dependencies, status)
            VALUES (run, op->>'task', (op->>'pos')::int, op->>'deps', op->>'status')
            ON CONFLICT DO NOTHING;
        WHEN 'st' THEN  -- an attempt starts
            UPDATE run_tasks SET status = 'running', attempts = (op->>'attempt')::int,
                   owner = op->>'owner', started_at = (op->>'at')::bigint, finished_at = NULL,
                   ready_at = NULL
            WHERE run_id = run AND task_id = op->>'task';
        WHEN 'ft' THEN  -- the latest attempt ended; the task row is its record
            UPDATE run_tasks SET status = op->>'status', output = op->>'output', error = op->>'error',
                   traceback = op->>'tb', finished_at = (op->>'at')::bigint, owner = op->>'owner',
                   reason = op->>'reason'
            WHERE run_id = run AND task_id = op->>'task';
        WHEN 'rty' THEN  -- an attempt failed and will be retried
            UPDATE run_tasks SET status = 'ready', ready_at = (op->>'ready_at')::bigint,
                   error = op->>'error', traceback = op->>'tb', finished_at = (op->>'at')::bigint,
                   owner = NULL
            WHERE run_id = run AND task_id = op->>'task';
            INSERT INTO earlier_attempts (run_id, task_id, attempt, status, owner, started_at,
                                          finished_at, error, traceback)
            VALUES (run, op->>'task', (op->>'attempt')::int, 'failed', op->>'owner',
                    (op->>'started_at')::bigint, (op->>'at')::bigint, op->>'error', op->>'tb')
            ON CONFLICT DO NOTHING;
        WHEN 'he' THEN  -- a hook raised
            UPDATE run_tasks
            SET hook_errors = (COALESCE(hook_errors, '[]')::jsonb
                               || jsonb_build_array((op->>'entry')::jsonb))::text
            WHERE run_id = run AND task_id = op->>'task';
        WHEN 'mt' THEN  -- a task changes status without running
            UPDATE run_tasks SET status = op->>'status', reason = op->>'reason',
                   finished_at = COALESCE((op->>'at')::bigint, finished_at)
            WHERE run_id = run AND task_id = op->>'task';
        WHEN 'fr' THEN  -- the run is final
            UPDATE runs SET status = op->>'status', error = op->>'error',
                   finished_at = (op->>'at')::bigint, owner = NULL
            WHERE run_id = run AND (owner = me OR owner IS NULL);
        ELSE
            RAISE EXCEPTION 'cloacina_commit: unknown op %', k;
        END CASE;
    END LOOP;
    RETURN json_build_object('lost', to_json(lost), 'dups', to_json(dups));
END;
$$;

-- Takes run `run` over for `me` if its owner is still `expected` (compare and set) and
-- that owner is gone: none (a queued or final run), or its lease expired (database
-- clock), or its liveness lock is not held (its session ended; not in the 10 s after a
-- server start, while every engine reconnects). One statement for the client (a
-- claimer that stalls holds no lock), waiting for a fenced batch of the previous owner
-- in flight (the run's advisory lock, exclusive here). The run gets a new owner epoch
-- and a lease of `lease` microseconds; queued and interrupted runs become running.
-- Returns the new epoch, or NULL when the run is not `expected`'s or its owner lives.
CREATE FUNCTION cloacina_claim(run text, expected text, me text, lease bigint)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    epoch bigint;
    now_us bigint;
BEGIN
    PERFORM pg_advisory_xact_lock(cloacina_run_key(run));
    now_us := (extract(epoch FROM clock_timestamp()) * 1000000)::bigint;
    UPDATE runs SET owner = me, owner_epoch = owner_epoch + 1, lease_expires_at = now_us + lease,
           status = CASE WHEN status IN ('interrupted', 'queued') THEN 'running' ELSE status END,
           started_at = COALESCE(started_at, now_us)
    WHERE run_id = run AND owner IS NOT DISTINCT FROM expected
      AND (expected IS NULL OR expected = me OR lease_expires_at IS NULL OR lease_expires_at < now_us
           OR (pg_postmaster_start_time() < clock_timestamp() - interval '10 seconds'
               AND NOT EXISTS (
                   SELECT 1 FROM pg_locks l
                   WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.granted
                     AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                     AND ((l.classid::bigint << 32) | l.objid::bigint)
                         = hashtextextended(current_schema() || ':' || expected, 0))))
    RETURNING owner_epoch INTO epoch;
    RETURN epoch;
END;
$$;
