/// The schema on PostgreSQL: the same tables, columns and keys as the SQLite migrations
/// (`GrayscaleDatabase.migrator`), under the same identifiers, in PostgreSQL's types.
/// Append-only, like the SQLite ones: a shipped migration is never edited.
/// (Unquoted names: PostgreSQL folds `createdAt` to `createdat`, and so do the queries.)
enum PostgresSchema {
    struct Migration {
        var identifier: String
        var statements: [String]
    }

    static let migrations: [Migration] = [
        Migration(identifier: "v1-foundation", statements: [
            "CREATE TABLE service (name text PRIMARY KEY, createdAt timestamptz NOT NULL)",
            """
            CREATE TABLE release (
                service text NOT NULL REFERENCES service (name) ON DELETE RESTRICT,
                number bigint NOT NULL, label text NOT NULL, upstream text NOT NULL, sourceRef text,
                salt text NOT NULL, status text NOT NULL, publishedAt timestamptz NOT NULL, statusChangedAt timestamptz NOT NULL,
                PRIMARY KEY (service, number), UNIQUE (service, label))
            """,
            """
            CREATE TABLE split (
                service text PRIMARY KEY REFERENCES service (name) ON DELETE RESTRICT,
                revision bigint NOT NULL, stableNumber bigint NOT NULL, canaryNumber bigint,
                rangeLower bigint NOT NULL, rangeUpper bigint NOT NULL, nonAuthWeight bigint NOT NULL,
                allowList text NOT NULL, denyList text NOT NULL, optInAllowed boolean NOT NULL, updatedAt timestamptz NOT NULL,
                FOREIGN KEY (service, stableNumber) REFERENCES release (service, number),
                FOREIGN KEY (service, canaryNumber) REFERENCES release (service, number))
            """,
            """
            CREATE TABLE splitChange (
                id bigserial PRIMARY KEY, service text NOT NULL REFERENCES service (name) ON DELETE RESTRICT,
                revision bigint NOT NULL, changedAt timestamptz NOT NULL, actor text NOT NULL, action text NOT NULL,
                reason text, split text NOT NULL, UNIQUE (service, revision))
            """,
            """
            CREATE TABLE rollout (
                id bigserial PRIMARY KEY, service text NOT NULL, releaseNumber bigint NOT NULL, state text NOT NULL,
                step bigint NOT NULL DEFAULT 0, startedAt timestamptz NOT NULL, updatedAt timestamptz NOT NULL, endedAt timestamptz,
                FOREIGN KEY (service, releaseNumber) REFERENCES release (service, number))
            """,
            """
            CREATE TABLE audit (
                id bigserial PRIMARY KEY, at timestamptz NOT NULL, service text, actor text NOT NULL, action text NOT NULL,
                command text, reason text, outcome text NOT NULL, detail text, splitBefore text, splitAfter text)
            """,
            "CREATE INDEX audit_by_service ON audit (service, id)",
            """
            CREATE TABLE metricSample (
                id bigserial PRIMARY KEY, service text NOT NULL, releaseNumber bigint NOT NULL, route text NOT NULL,
                windowStart timestamptz NOT NULL, windowEnd timestamptz NOT NULL, requests bigint NOT NULL, errors bigint NOT NULL,
                latencyP50Ms double precision, latencyP99Ms double precision, histogram bytea)
            """,
            "CREATE INDEX metricSample_by_release ON metricSample (service, releaseNumber, windowStart)",
            """
            CREATE TABLE notification (
                id bigserial PRIMARY KEY, createdAt timestamptz NOT NULL, service text, channel text NOT NULL, text text NOT NULL,
                attempts bigint NOT NULL DEFAULT 0, nextAttemptAt timestamptz NOT NULL, deliveredAt timestamptz, lastError text)
            """,
        ]),
        Migration(identifier: "v2-controller", statements: [
            """
            CREATE TABLE rolloutState (
                service text PRIMARY KEY REFERENCES service (name) ON DELETE RESTRICT,
                releaseNumber bigint NOT NULL, revision bigint NOT NULL, state text NOT NULL, updatedAt timestamptz NOT NULL)
            """,
            """
            CREATE TABLE verdict (
                id bigserial PRIMARY KEY, service text NOT NULL, releaseNumber bigint NOT NULL, at timestamptz NOT NULL,
                outcome text NOT NULL, reason text NOT NULL, critical boolean NOT NULL, numbers text NOT NULL)
            """,
            "CREATE INDEX verdict_by_release ON verdict (service, releaseNumber, id)",
            """
            CREATE TABLE controlCommand (
                id bigserial PRIMARY KEY, service text NOT NULL, command text NOT NULL,
                createdAt timestamptz NOT NULL, consumedAt timestamptz)
            """,
        ]),
        Migration(identifier: "v3-slack", statements: [
            "CREATE TABLE slackEvent (eventId text PRIMARY KEY, receivedAt timestamptz NOT NULL)",
        ]),
        Migration(identifier: "v4-lease-and-exactly-once", statements: [
            "CREATE TABLE controllerLease (name text PRIMARY KEY, lease text NOT NULL)",
            "CREATE TABLE controllerPresence (holder text PRIMARY KEY, role text NOT NULL, seenAt timestamptz NOT NULL)",
            "CREATE TABLE commandResult (id text PRIMARY KEY, service text NOT NULL, result text NOT NULL, at timestamptz NOT NULL)",
            "ALTER TABLE controlCommand ADD COLUMN commandId text",
            "CREATE UNIQUE INDEX controlCommand_by_commandId ON controlCommand (commandId)",
            "ALTER TABLE verdict ADD COLUMN leaseToken bigint",
            "ALTER TABLE audit ADD COLUMN leaseToken bigint",
            "ALTER TABLE notification ADD COLUMN deadAt timestamptz",
        ]),
        Migration(identifier: "v5-slack-replies", statements: [
            "ALTER TABLE notification ADD COLUMN threadTs text",
            "ALTER TABLE notification ADD COLUMN responseUrl text",
        ]),
        Migration(identifier: "v6-announcements", statements: [
            """
            CREATE TABLE announcement (
                service text NOT NULL, number bigint NOT NULL, announcedAt timestamptz NOT NULL, actor text NOT NULL, notes text NOT NULL,
                PRIMARY KEY (service, number), FOREIGN KEY (service, number) REFERENCES release (service, number))
            """,
        ]),
        Migration(identifier: "v7-platform-releases", statements: [
            "ALTER TABLE release ADD COLUMN platform text",
            "CREATE INDEX release_by_platform ON release (platform)",
        ]),
        Migration(identifier: "v8-mirror-and-drain", statements: [
            "ALTER TABLE split ADD COLUMN mirrorShare bigint",
            "ALTER TABLE split ADD COLUMN webSocketDrain bigint",
        ]),
        Migration(identifier: "v9-mirror-routes", statements: [
            "ALTER TABLE split ADD COLUMN mirrorRoutes text",
        ]),
    ]
}
