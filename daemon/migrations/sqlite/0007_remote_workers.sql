-- Workers that lease tasks over HTTP (the lease protocol) beside taskd's own: which kinds
-- each serves (comma-separated), and whether it is remote.
ALTER TABLE workers ADD COLUMN kinds TEXT NOT NULL DEFAULT '';
ALTER TABLE workers ADD COLUMN remote INTEGER NOT NULL DEFAULT 0;
