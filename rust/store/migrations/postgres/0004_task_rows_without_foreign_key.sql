-- Task rows keep no foreign key to `runs`. A run's task rows are written by the statement
-- that writes the run (and then only by the run's own batches, which never change
-- `run_id`), and `purge` deletes them in the statement that deletes their run. The key
-- only checked this again, once per task row of every new run, and that check was about
-- a tenth of what starting a run costs the server (`start()` in W4).
ALTER TABLE run_tasks DROP CONSTRAINT IF EXISTS run_tasks_run_id_fkey;
