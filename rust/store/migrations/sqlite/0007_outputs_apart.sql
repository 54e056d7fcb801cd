-- A large output (a completed task's writes, a JSON object) moves out of its run_tasks
-- row into `outputs`, a table rows are only ever appended to (a completed task's output
-- never changes); a small one stays in the row, in `output_inline`. run_tasks is a
-- WITHOUT ROWID table keyed by (run_id, task_id): a row of more than about 1 KB spills
-- into an overflow page of its own, and rows growing in the middle of the tree split its
-- pages, so a task writing 1 KB made its commit three times as long and the file 4.5
-- times its data. Appended rows fill pages in order; an output of a few dozen bytes is
-- still cheapest in the row it already writes (one page per commit, not two).
--
-- `task_outputs` (a view) gives every completed task's output wherever it is. The
-- column is renamed so that a query still reading `run_tasks.output` fails loudly
-- instead of missing the large outputs.
CREATE TABLE outputs (
    id      INTEGER PRIMARY KEY,
    output  TEXT NOT NULL                   -- JSON object: one task's writes (its delta)
);
ALTER TABLE run_tasks ADD COLUMN output_id INTEGER;   -- outputs.id of a large output
ALTER TABLE run_tasks RENAME COLUMN output TO output_inline;

CREATE VIEW task_outputs AS
SELECT t.run_id, t.task_id, COALESCE(t.output_inline, o.output, '{}') AS output
FROM run_tasks AS t LEFT JOIN outputs AS o ON o.id = t.output_id
WHERE t.status = 'completed';
