"""The PostgreSQL store's schema, as versioned migrations (``saline_schema`` holds the
version), and every statement the store runs, as literals (no SQL is built at run time).

Columns and meanings are the SQLite store's (``schema.py``); ``user`` is ``user_name`` here
(a reserved word), and ``row_no`` orders reactions written in one instant.
"""

SCHEMA_VERSION = 4

MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        """CREATE TABLE jobs (
            jid TEXT PRIMARY KEY,
            fun TEXT NOT NULL,
            args BYTEA NOT NULL,
            kwargs BYTEA NOT NULL,
            target TEXT NOT NULL,
            tgt_type TEXT NOT NULL,
            minions BYTEA NOT NULL,
            missing BYTEA NOT NULL,
            user_name TEXT NOT NULL,
            created DOUBLE PRECISION NOT NULL,
            timeout DOUBLE PRECISION NOT NULL,
            cause BIGINT,
            depth INTEGER NOT NULL DEFAULT 0,
            rule TEXT
        )""",
        """CREATE TABLE returns (
            jid TEXT NOT NULL,
            minion TEXT NOT NULL,
            fun TEXT NOT NULL,
            success BOOLEAN NOT NULL,
            retcode INTEGER NOT NULL,
            ret BYTEA NOT NULL,
            duration_ms DOUBLE PRECISION NOT NULL,
            received DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (jid, minion)
        )""",
        """CREATE TABLE events (
            seq BIGSERIAL PRIMARY KEY,
            tag TEXT NOT NULL,
            data BYTEA NOT NULL,
            minion TEXT,
            ts DOUBLE PRECISION NOT NULL,
            cause BIGINT,
            depth INTEGER NOT NULL DEFAULT 0,
            rule TEXT
        )""",
        """CREATE TABLE minions (
            id TEXT PRIMARY KEY,
            grains BYTEA NOT NULL,
            last_seen DOUBLE PRECISION NOT NULL
        )""",
        """CREATE TABLE reactions (
            id TEXT PRIMARY KEY,
            row_no BIGSERIAL,
            event_seq BIGINT,
            event_tag TEXT NOT NULL,
            rule TEXT NOT NULL,
            verdict TEXT NOT NULL,
            reason TEXT NOT NULL,
            key TEXT NOT NULL,
            actions BYTEA NOT NULL,
            progress BYTEA NOT NULL,
            outcome TEXT,
            created DOUBLE PRECISION NOT NULL,
            finished DOUBLE PRECISION
        )""",
        "CREATE INDEX reactions_created ON reactions (created)",
        "CREATE INDEX reactions_open ON reactions (created) WHERE outcome IS NULL",
        """CREATE TABLE reactor_state (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            state BYTEA NOT NULL,
            updated DOUBLE PRECISION NOT NULL
        )""",
    ),
    # retention: what the prunes walk, and the events a held reaction keeps
    2: (
        "CREATE INDEX jobs_created ON jobs (created)",
        "CREATE INDEX events_ts ON events (ts)",
        """CREATE INDEX reactions_held ON reactions (event_seq)
            WHERE outcome IS NULL OR outcome = 'await_approval'""",
    ),
    # fencing by leadership epoch: jobs and reactions carry theirs (0 for what was written
    # before); the newest epoch seen (one row, once written); which events some reaction
    # decided (a new leader's replay)
    3: (
        "ALTER TABLE jobs ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0",
        "ALTER TABLE reactions ADD COLUMN epoch BIGINT NOT NULL DEFAULT 0",
        """CREATE TABLE saline_fence (
            id INTEGER PRIMARY KEY CHECK (id = 1),
            epoch BIGINT NOT NULL
        )""",
        "CREATE INDEX reactions_event ON reactions (event_seq)",
    ),
    # shared keys: the minion keys every master mirrors; a write takes the next value of
    # the sequence, a deleted key stays as a tombstone (state 'deleted')
    4: (
        "CREATE SEQUENCE minion_keys_version",
        """CREATE TABLE minion_keys (
            id TEXT PRIMARY KEY,
            state TEXT NOT NULL
                CHECK (state IN ('accepted', 'pending', 'rejected', 'deleted')),
            public TEXT NOT NULL,
            grains TEXT NOT NULL,
            version BIGINT NOT NULL UNIQUE,
            changed DOUBLE PRECISION NOT NULL
        )""",
    ),
}

#: one master migrates at a time (a transaction-scoped advisory lock); the others wait
MIGRATION_LOCK = "SELECT pg_advisory_xact_lock(4606)"
CREATE_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS saline_schema (version INTEGER NOT NULL)"
SELECT_VERSION = "SELECT version FROM saline_schema"
INSERT_VERSION = "INSERT INTO saline_schema (version) VALUES (%s)"
UPDATE_VERSION = "UPDATE saline_schema SET version = %s"

SAVE_JOB = """
    INSERT INTO jobs (jid, fun, args, kwargs, target, tgt_type, minions, missing, user_name,
        created, timeout, cause, depth, rule, epoch)
    VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)
    ON CONFLICT (jid) DO UPDATE SET fun = EXCLUDED.fun, args = EXCLUDED.args,
        kwargs = EXCLUDED.kwargs, target = EXCLUDED.target, tgt_type = EXCLUDED.tgt_type,
        minions = EXCLUDED.minions, missing = EXCLUDED.missing, user_name = EXCLUDED.user_name,
        created = EXCLUDED.created, timeout = EXCLUDED.timeout, cause = EXCLUDED.cause,
        depth = EXCLUDED.depth, rule = EXCLUDED.rule, epoch = EXCLUDED.epoch
"""
SELECT_JOB = """
    SELECT jid, fun, args, kwargs, target, tgt_type, minions, missing, user_name, created,
        timeout, cause, depth, rule, epoch
    FROM jobs WHERE jid = %s
"""
# Filters (NULL filters nothing): fun and target are regular expressions made from globs
# (postgres.glob_regex), user is exact.
LIST_JOBS = """
    SELECT jid, fun, args, kwargs, target, tgt_type, minions, missing, user_name, created,
        timeout, cause, depth, rule, epoch,
        (SELECT COUNT(*) FROM returns r WHERE r.jid = j.jid),
        (SELECT COUNT(*) FROM returns r WHERE r.jid = j.jid AND r.success)
    FROM jobs j
    WHERE (%(fun)s::text IS NULL OR j.fun ~ %(fun)s)
        AND (%(target)s::text IS NULL OR j.target ~ %(target)s)
        AND (%(user)s::text IS NULL OR j.user_name = %(user)s)
    ORDER BY j.jid DESC LIMIT %(limit)s
"""
SCAN_JOBS_KWARGS = """
    SELECT jid, kwargs FROM jobs j
    WHERE (%(fun)s::text IS NULL OR j.fun ~ %(fun)s)
        AND (%(target)s::text IS NULL OR j.target ~ %(target)s)
        AND (%(user)s::text IS NULL OR j.user_name = %(user)s)
    ORDER BY j.jid DESC LIMIT %(limit)s
"""
LIST_JOBS_BY_JID = """
    SELECT jid, fun, args, kwargs, target, tgt_type, minions, missing, user_name, created,
        timeout, cause, depth, rule, epoch,
        (SELECT COUNT(*) FROM returns r WHERE r.jid = j.jid),
        (SELECT COUNT(*) FROM returns r WHERE r.jid = j.jid AND r.success)
    FROM jobs j WHERE j.jid = ANY(%(jids)s) ORDER BY j.jid DESC
"""
#: for execute_values: a page of returns in one statement; RETURNING names the rows that
#: were new (a (jid, minion) stored before, or earlier in the page, is not)
INSERT_RETURNS = """
    INSERT INTO returns (jid, minion, fun, success, retcode, ret, duration_ms, received)
    VALUES %s ON CONFLICT (jid, minion) DO NOTHING RETURNING jid, minion
"""
SELECT_RETURNS = """
    SELECT jid, minion, fun, success, retcode, ret, duration_ms, received
    FROM returns WHERE jid = %s ORDER BY minion
"""
#: for execute_values: one statement per page, RETURNING in the order of the VALUES
INSERT_EVENTS = """
    INSERT INTO events (tag, data, minion, ts, cause, depth, rule) VALUES %s RETURNING seq
"""
EVENTS_SINCE = """
    SELECT seq, tag, data, minion, ts, cause, depth, rule FROM events
    WHERE seq > %s ORDER BY seq LIMIT %s
"""
SAVE_MINION = """
    INSERT INTO minions (id, grains, last_seen) VALUES (%s,%s,%s)
    ON CONFLICT (id) DO UPDATE SET grains = EXCLUDED.grains, last_seen = EXCLUDED.last_seen
"""
SELECT_MINIONS = "SELECT id, grains, last_seen FROM minions ORDER BY id"
DELETE_MINION = "DELETE FROM minions WHERE id = %s"
#: for execute_values: a page of reactions, each id at most once (an upsert may not touch
#: one row twice in a statement)
SAVE_REACTIONS = """
    INSERT INTO reactions (id, event_seq, event_tag, rule, verdict, reason, key, actions,
        progress, outcome, created, finished, epoch)
    VALUES %s
    ON CONFLICT (id) DO UPDATE SET event_seq = EXCLUDED.event_seq,
        event_tag = EXCLUDED.event_tag, rule = EXCLUDED.rule, verdict = EXCLUDED.verdict,
        reason = EXCLUDED.reason, key = EXCLUDED.key, actions = EXCLUDED.actions,
        progress = EXCLUDED.progress, outcome = EXCLUDED.outcome, created = EXCLUDED.created,
        finished = EXCLUDED.finished, epoch = EXCLUDED.epoch
"""
SELECT_REACTION = """
    SELECT id, event_seq, event_tag, rule, verdict, reason, key, actions, progress, outcome,
        created, finished, epoch
    FROM reactions WHERE id = %s
"""
REACTION_HISTORY = """
    SELECT id, event_seq, event_tag, rule, verdict, reason, key, actions, progress, outcome,
        created, finished, epoch
    FROM reactions WHERE (%s::text IS NULL OR rule = %s)
    ORDER BY created DESC, row_no DESC LIMIT %s
"""
OPEN_REACTIONS = """
    SELECT id, event_seq, event_tag, rule, verdict, reason, key, actions, progress, outcome,
        created, finished, epoch
    FROM reactions WHERE outcome IS NULL AND verdict IN ('fire', 'approved')
    ORDER BY created, row_no
"""
SAVE_REACTOR_STATE = """
    INSERT INTO reactor_state (id, state, updated) VALUES (1, %s, %s)
    ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, updated = EXCLUDED.updated
"""
LOAD_REACTOR_STATE = "SELECT state FROM reactor_state WHERE id = 1"

# -- fencing -------------------------------------------------------------------------------
#: the first statement of a fenced write's transaction: raises the fence to the write's epoch
#: unless it is higher, and returns the fence. The upsert locks the fence's row until the
#: transaction ends, so fenced writers are serialised: a concurrent one waits, then sees the
#: committed fence. A result above the write's epoch means fenced (postgres.py rolls back).
RAISE_FENCE = """
    INSERT INTO saline_fence (id, epoch) VALUES (1, %s)
    ON CONFLICT (id) DO UPDATE SET epoch = GREATEST(saline_fence.epoch, EXCLUDED.epoch)
    RETURNING epoch
"""
SELECT_FENCE = "SELECT epoch FROM saline_fence WHERE id = 1"
#: the seqs (a bigint array) that some reaction names; walks the event_seq index
DECIDED_EVENTS = """
    SELECT DISTINCT event_seq FROM reactions WHERE event_seq = ANY(%s::bigint[])
"""
LAST_EVENT_SEQ = "SELECT COALESCE(MAX(seq), 0) FROM events"

# -- shared keys ----------------------------------------------------------------------------
#: first in a key write's transaction: key writers take their version one after the other
#: (the lock is held until commit), so versions commit in order and a reader's cursor
#: never passes a version that commits later
KEY_WRITE_LOCK = "SELECT pg_advisory_xact_lock(4607)"
PUT_KEY = """
    INSERT INTO minion_keys (id, state, public, grains, version, changed)
    VALUES (%s, %s, %s, %s, nextval('minion_keys_version'), %s)
    ON CONFLICT (id) DO UPDATE SET state = EXCLUDED.state, public = EXCLUDED.public,
        grains = EXCLUDED.grains, version = EXCLUDED.version, changed = EXCLUDED.changed
"""
#: a tombstone keeps the public key it had ("" when the id was never stored)
DELETE_KEY = """
    INSERT INTO minion_keys (id, state, public, grains, version, changed)
    VALUES (%s, 'deleted', '', '{}', nextval('minion_keys_version'), %s)
    ON CONFLICT (id) DO UPDATE SET state = 'deleted', grains = '{}',
        version = EXCLUDED.version, changed = EXCLUDED.changed
"""
KEYS_SINCE = """
    SELECT id, state, public, grains, version, changed FROM minion_keys
    WHERE version > %s ORDER BY version
"""

# -- retention: as the SQLite store's (schema.py); the kept jids are a text array ---------
PRUNE_RETURNS = """
    DELETE FROM returns WHERE (jid, minion) IN (
        SELECT r.jid, r.minion FROM jobs j JOIN returns r ON r.jid = j.jid
        WHERE j.created < %(before)s AND j.created + j.timeout < %(before)s
            AND j.jid <> ALL(%(keep)s::text[])
        LIMIT %(batch)s)
"""
PRUNE_JOBS = """
    DELETE FROM jobs WHERE jid IN (
        SELECT j.jid FROM jobs j
        WHERE j.created < %(before)s AND j.created + j.timeout < %(before)s
            AND j.jid <> ALL(%(keep)s::text[])
            AND NOT EXISTS (SELECT 1 FROM returns r WHERE r.jid = j.jid)
        ORDER BY j.created LIMIT %(batch)s)
"""
PRUNE_EVENTS = """
    DELETE FROM events WHERE seq IN (
        SELECT e.seq FROM events e
        WHERE e.ts < %(before)s AND NOT EXISTS (
            SELECT 1 FROM reactions h
            WHERE (h.outcome IS NULL OR h.outcome = 'await_approval') AND h.event_seq = e.seq)
        ORDER BY e.ts LIMIT %(batch)s)
"""
PRUNE_REACTIONS = """
    DELETE FROM reactions WHERE id IN (
        SELECT id FROM reactions
        WHERE created < %(before)s AND outcome IS NOT NULL AND outcome <> 'await_approval'
        ORDER BY created LIMIT %(batch)s)
"""
#: rows and bytes (pg_total_relation_size: indexes and TOAST included) per table
TABLE_STATS = """
    SELECT 'jobs', COUNT(*), pg_total_relation_size('jobs') FROM jobs
    UNION ALL SELECT 'returns', COUNT(*), pg_total_relation_size('returns') FROM returns
    UNION ALL SELECT 'events', COUNT(*), pg_total_relation_size('events') FROM events
    UNION ALL SELECT 'reactions', COUNT(*), pg_total_relation_size('reactions') FROM reactions
    UNION ALL SELECT 'minions', COUNT(*), pg_total_relation_size('minions') FROM minions
    UNION ALL SELECT 'reactor_state', COUNT(*), pg_total_relation_size('reactor_state')
        FROM reactor_state
    UNION ALL SELECT 'minion_keys', COUNT(*), pg_total_relation_size('minion_keys')
        FROM minion_keys
"""
