"""The SQLite store's tables, its migrations, and every statement it runs.

Full statements as literals: no SQL is built from strings at run time.
"""

SCHEMA_VERSION = 6

# Executed one by one in a transaction (executescript would commit implicitly).
TABLES = (
    """CREATE TABLE IF NOT EXISTS jobs (
        jid TEXT PRIMARY KEY,
        fun TEXT NOT NULL,
        args BLOB NOT NULL,
        kwargs BLOB NOT NULL,
        target TEXT NOT NULL,
        tgt_type TEXT NOT NULL,
        minions BLOB NOT NULL,
        missing BLOB NOT NULL,
        user TEXT NOT NULL,
        created REAL NOT NULL,
        timeout REAL NOT NULL,
        cause INTEGER,
        depth INTEGER NOT NULL DEFAULT 0,
        rule TEXT,
        epoch INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS returns (
        jid TEXT NOT NULL,
        minion TEXT NOT NULL,
        fun TEXT NOT NULL,
        success INTEGER NOT NULL,
        retcode INTEGER NOT NULL,
        ret BLOB NOT NULL,
        duration_ms REAL NOT NULL,
        received REAL NOT NULL,
        PRIMARY KEY (jid, minion)
    )""",
    """CREATE TABLE IF NOT EXISTS events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        tag TEXT NOT NULL,
        data BLOB NOT NULL,
        minion TEXT,
        ts REAL NOT NULL,
        cause INTEGER,
        depth INTEGER NOT NULL DEFAULT 0,
        rule TEXT
    )""",
    """CREATE TABLE IF NOT EXISTS minions (
        id TEXT PRIMARY KEY,
        grains BLOB NOT NULL,
        last_seen REAL NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS reactions (
        id TEXT PRIMARY KEY,
        event_seq INTEGER,
        event_tag TEXT NOT NULL,
        rule TEXT NOT NULL,
        verdict TEXT NOT NULL,
        reason TEXT NOT NULL,
        key TEXT NOT NULL,
        actions BLOB NOT NULL,
        progress BLOB NOT NULL,
        outcome TEXT,
        created REAL NOT NULL,
        finished REAL,
        epoch INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS reactions_created ON reactions (created)",
    """CREATE TABLE IF NOT EXISTS reactor_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        state BLOB NOT NULL,
        updated REAL NOT NULL
    )""",
    # retention (4): what the prunes walk, and the events a held reaction keeps
    "CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created)",
    "CREATE INDEX IF NOT EXISTS events_ts ON events (ts)",
    """CREATE INDEX IF NOT EXISTS reactions_held ON reactions (event_seq)
        WHERE outcome IS NULL OR outcome = 'await_approval'""",
    # fencing (5): the newest leadership epoch a write carried (one row, once written);
    # which events some reaction decided (a new leader's replay)
    """CREATE TABLE IF NOT EXISTS saline_fence (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        epoch INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS reactions_event ON reactions (event_seq)",
    # shared keys (6): the minion keys every master mirrors; a write takes the next version
    # of the whole table, a deleted key stays as a tombstone (state 'deleted')
    """CREATE TABLE IF NOT EXISTS minion_keys (
        id TEXT PRIMARY KEY,
        state TEXT NOT NULL CHECK (state IN ('accepted', 'pending', 'rejected', 'deleted')),
        public TEXT NOT NULL,
        grains TEXT NOT NULL,
        version INTEGER NOT NULL,
        changed REAL NOT NULL
    )""",
    "CREATE UNIQUE INDEX IF NOT EXISTS minion_keys_version ON minion_keys (version)",
)

#: statements taking the schema from version N to N + 1 (then TABLES creates what is new)
MIGRATIONS: dict[int, tuple[str, ...]] = {
    # 2 adds the reaction chain of events
    1: (
        "ALTER TABLE events ADD COLUMN cause INTEGER",
        "ALTER TABLE events ADD COLUMN depth INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE events ADD COLUMN rule TEXT",
    ),
    # 3 stores the reaction chain with the job (the reactions tables join the schema;
    # earlier versions created them beside it, with the same columns)
    2: (
        "ALTER TABLE jobs ADD COLUMN cause INTEGER",
        "ALTER TABLE jobs ADD COLUMN depth INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN rule TEXT",
    ),
    # 4 indexes what retention deletes by (jobs by created, events by ts); the partial
    # index on held reactions comes with TABLES, which runs after every migration
    3: (
        "CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created)",
        "CREATE INDEX IF NOT EXISTS events_ts ON events (ts)",
    ),
    # 5 fences writes by leadership epoch: jobs and reactions carry theirs (0 for what was
    # written before); the fence table and the event_seq index come with TABLES. A store
    # of version 1 or 2 whose master never reacted has no reactions table yet: it gets
    # the one of version 4 first, so the ALTER finds it.
    4: (
        """CREATE TABLE IF NOT EXISTS reactions (
            id TEXT PRIMARY KEY,
            event_seq INTEGER,
            event_tag TEXT NOT NULL,
            rule TEXT NOT NULL,
            verdict TEXT NOT NULL,
            reason TEXT NOT NULL,
            key TEXT NOT NULL,
            actions BLOB NOT NULL,
            progress BLOB NOT NULL,
            outcome TEXT,
            created REAL NOT NULL,
            finished REAL
        )""",
        "ALTER TABLE jobs ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE reactions ADD COLUMN epoch INTEGER NOT NULL DEFAULT 0",
    ),
    # 6 shares minion keys between masters: the minion_keys table comes with TABLES
    5: (),
}

INSERT_JOB = (
    "INSERT OR REPLACE INTO jobs"
    " (jid, fun, args, kwargs, target, tgt_type, minions, missing, user, created, timeout,"
    " cause, depth, rule, epoch)"
    " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
SELECT_JOB = (
    "SELECT jid, fun, args, kwargs, target, tgt_type, minions, missing, user, created, timeout,"
    " cause, depth, rule, epoch FROM jobs WHERE jid = ?"
)
# Correlated subqueries use the (jid, minion) primary key of returns and only touch the
# returns of the selected jobs, unlike a GROUP BY over all returns.
# Filters (named parameters :fun, :target, :user; NULL filters nothing): fun and target are
# GLOBs (case-sensitive; *, ?, [abc], [^abc]: sqlite.py turns fnmatch's [!abc] into
# [^abc]), user is exact.
LIST_JOBS = """
    SELECT jid, fun, args, kwargs, target, tgt_type, minions, missing, user, created, timeout,
        cause, depth, rule, epoch,
        (SELECT COUNT(*) FROM returns r WHERE r.jid = j.jid),
        (SELECT COUNT(*) FROM returns r WHERE r.jid = j.jid AND r.success != 0)
    FROM jobs j
    WHERE (:fun IS NULL OR j.fun GLOB :fun) AND (:target IS NULL OR j.target GLOB :target)
        AND (:user IS NULL OR j.user = :user)
    ORDER BY j.jid DESC LIMIT :limit
"""
# The test-mode filter reads kwargs, a msgpack blob: the newest jobs passing the SQL
# filters are scanned (jid and kwargs only), then each match is read with LIST_JOB.
SCAN_JOBS_KWARGS = """
    SELECT jid, kwargs FROM jobs j
    WHERE (:fun IS NULL OR j.fun GLOB :fun) AND (:target IS NULL OR j.target GLOB :target)
        AND (:user IS NULL OR j.user = :user)
    ORDER BY j.jid DESC LIMIT :limit
"""
LIST_JOB = """
    SELECT jid, fun, args, kwargs, target, tgt_type, minions, missing, user, created, timeout,
        cause, depth, rule, epoch,
        (SELECT COUNT(*) FROM returns r WHERE r.jid = j.jid),
        (SELECT COUNT(*) FROM returns r WHERE r.jid = j.jid AND r.success != 0)
    FROM jobs j WHERE j.jid = ?
"""
INSERT_RETURN = (
    "INSERT OR IGNORE INTO returns"
    " (jid, minion, fun, success, retcode, ret, duration_ms, received)"
    " VALUES (?,?,?,?,?,?,?,?)"
)
SELECT_RETURNS = (
    "SELECT jid, minion, fun, success, retcode, ret, duration_ms, received"
    " FROM returns WHERE jid = ? ORDER BY minion"
)
INSERT_EVENT = (
    "INSERT INTO events (tag, data, minion, ts, cause, depth, rule) VALUES (?,?,?,?,?,?,?)"
)
EVENTS_SINCE = (
    "SELECT seq, tag, data, minion, ts, cause, depth, rule FROM events"
    " WHERE seq > ? ORDER BY seq LIMIT ?"
)
SAVE_MINION = """INSERT INTO minions (id, grains, last_seen) VALUES (?,?,?)
    ON CONFLICT (id) DO UPDATE SET grains = excluded.grains, last_seen = excluded.last_seen"""
SELECT_MINIONS = "SELECT id, grains, last_seen FROM minions ORDER BY id"
DELETE_MINION = "DELETE FROM minions WHERE id = ?"

SAVE_REACTION = (
    "INSERT OR REPLACE INTO reactions (id, event_seq, event_tag, rule, verdict, reason, key,"
    " actions, progress, outcome, created, finished, epoch) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
SELECT_REACTION = (
    "SELECT id, event_seq, event_tag, rule, verdict, reason, key, actions, progress, outcome,"
    " created, finished, epoch FROM reactions WHERE id = ?"
)
REACTION_HISTORY = (
    "SELECT id, event_seq, event_tag, rule, verdict, reason, key, actions, progress, outcome,"
    " created, finished, epoch FROM reactions WHERE (? IS NULL OR rule = ?)"
    " ORDER BY created DESC, rowid DESC LIMIT ?"
)
OPEN_REACTIONS = (
    "SELECT id, event_seq, event_tag, rule, verdict, reason, key, actions, progress, outcome,"
    " created, finished, epoch FROM reactions WHERE outcome IS NULL"
    " AND verdict IN ('fire', 'approved') ORDER BY created"
)
SAVE_REACTOR_STATE = "INSERT OR REPLACE INTO reactor_state (id, state, updated) VALUES (1, ?, ?)"
LOAD_REACTOR_STATE = "SELECT state FROM reactor_state WHERE id = 1"

# -- fencing: read and raised in the write's own IMMEDIATE transaction (the write lock
# serialises writers, so the read-then-write cannot race) --------------------------------
SELECT_FENCE = "SELECT epoch FROM saline_fence WHERE id = 1"
SAVE_FENCE = "INSERT OR REPLACE INTO saline_fence (id, epoch) VALUES (1, ?)"
#: the seqs (a JSON array) that some reaction names; walks the event_seq index
DECIDED_EVENTS = """
    SELECT DISTINCT event_seq FROM reactions
    WHERE event_seq IN (SELECT value FROM json_each(:seqs))
"""
LAST_EVENT_SEQ = "SELECT COALESCE(MAX(seq), 0) FROM events"

# -- shared keys: written in an IMMEDIATE transaction (the write lock is held), so the
# next version (the largest + 1; rows are never deleted, only marked) is the writer's own
PUT_KEY = """
    INSERT INTO minion_keys (id, state, public, grains, version, changed)
    VALUES (?, ?, ?, ?, (SELECT COALESCE(MAX(version), 0) + 1 FROM minion_keys), ?)
    ON CONFLICT (id) DO UPDATE SET state = excluded.state, public = excluded.public,
        grains = excluded.grains, version = excluded.version, changed = excluded.changed
"""
#: a tombstone keeps the public key it had ("" when the id was never stored)
DELETE_KEY = """
    INSERT INTO minion_keys (id, state, public, grains, version, changed)
    VALUES (?, 'deleted', '', '{}', (SELECT COALESCE(MAX(version), 0) + 1 FROM minion_keys), ?)
    ON CONFLICT (id) DO UPDATE SET state = 'deleted', grains = '{}',
        version = excluded.version, changed = excluded.changed
"""
KEYS_SINCE = """
    SELECT id, state, public, grains, version, changed FROM minion_keys
    WHERE version > ? ORDER BY version
"""

# -- retention ----------------------------------------------------------------------------
# A reaction is held while open (outcome NULL) or awaiting approval: it, and the event it
# names, are never pruned. A job is prunable when created before the cutoff, its wait over
# before it too (created + timeout), and not in the JSON array of jids the master keeps
# (its active jobs, those of open reactions). Each prune deletes at most :batch rows.
PRUNE_RETURNS = """
    DELETE FROM returns WHERE (jid, minion) IN (
        SELECT r.jid, r.minion FROM jobs j JOIN returns r ON r.jid = j.jid
        WHERE j.created < :before AND j.created + j.timeout < :before
            AND j.jid NOT IN (SELECT value FROM json_each(:keep))
        LIMIT :batch)
"""
PRUNE_JOBS = """
    DELETE FROM jobs WHERE jid IN (
        SELECT j.jid FROM jobs j
        WHERE j.created < :before AND j.created + j.timeout < :before
            AND j.jid NOT IN (SELECT value FROM json_each(:keep))
            AND NOT EXISTS (SELECT 1 FROM returns r WHERE r.jid = j.jid)
        ORDER BY j.created LIMIT :batch)
"""
PRUNE_EVENTS = """
    DELETE FROM events WHERE seq IN (
        SELECT e.seq FROM events e
        WHERE e.ts < :before AND e.seq NOT IN (
            SELECT event_seq FROM reactions
            WHERE (outcome IS NULL OR outcome = 'await_approval') AND event_seq IS NOT NULL)
        ORDER BY e.ts LIMIT :batch)
"""
PRUNE_REACTIONS = """
    DELETE FROM reactions WHERE id IN (
        SELECT id FROM reactions
        WHERE created < :before AND outcome IS NOT NULL AND outcome != 'await_approval'
        ORDER BY created LIMIT :batch)
"""
#: rows per table of saline's, in one statement
COUNT_ROWS = """
    SELECT 'jobs', COUNT(*) FROM jobs
    UNION ALL SELECT 'returns', COUNT(*) FROM returns
    UNION ALL SELECT 'events', COUNT(*) FROM events
    UNION ALL SELECT 'reactions', COUNT(*) FROM reactions
    UNION ALL SELECT 'minions', COUNT(*) FROM minions
    UNION ALL SELECT 'reactor_state', COUNT(*) FROM reactor_state
    UNION ALL SELECT 'minion_keys', COUNT(*) FROM minion_keys
"""
#: bytes per table, its indexes included (the dbstat table, when SQLite was built with it)
TABLE_BYTES = """
    SELECT m.tbl_name, SUM(d.pgsize) FROM dbstat d JOIN sqlite_master m ON m.name = d.name
    GROUP BY m.tbl_name
"""
