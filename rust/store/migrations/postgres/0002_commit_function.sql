-- One scheduler batch in one round trip: `cloacina_commit` applies a batch of ops (a
-- JSON array, parsed once as jsonb, built by `store/postgres/write.rs`) as a single statement, hence a single
-- transaction, where sending each op as a statement of an explicit transaction cost a
-- network round trip each (five for a task of a chain: BEGIN, the fence, finishing one
-- task, starting the next, COMMIT).
--
-- The fence: the runs the batch drives (`touched`) are locked in a fixed order and must
-- still be owned by `me`, at the epoch `epochs` names for each (when it names one). The
-- ops of a run that is not are skipped (hook errors and events excepted), and the run is
-- reported in `lost`. A new run whose idempotency key another run holds is not inserted;
-- its ops are skipped and it is reported in `dups` with the existing run's id.
-- Leases arrive as microseconds from now and are stored on the database's clock.
CREATE FUNCTION cloacina_commit(ops jsonb, me text, touched text[], epochs jsonb)
RETURNS json LANGUAGE plpgsql AS $$
DECLARE
    op jsonb;
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
        FOR r IN SELECT run_id, owner, owner_epoch FROM runs WHERE run_id = ANY(touched)
                 ORDER BY run_id FOR NO KEY UPDATE LOOP
            IF r.owner IS DISTINCT FROM me
               OR (epochs->>r.run_id IS NOT NULL AND (epochs->>r.run_id)::bigint <> r.owner_epoch) THEN
                lost := lost || r.run_id;
            END IF;
        END LOOP;
    END IF;
    FOR op IN SELECT value FROM jsonb_array_elements(ops) LOOP
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
