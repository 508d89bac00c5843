import GRDB

extension GrayscaleDatabase {
    /// Append-only: a shipped migration is never edited, a change is a new migration.
    static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1-foundation") { db in
            try db.create(table: "service") { t in
                t.primaryKey("name", .text)
                t.column("createdAt", .datetime).notNull()
            }
            try db.create(table: "release") { t in
                t.column("service", .text).notNull().references("service", onDelete: .restrict)
                t.column("number", .integer).notNull()
                t.column("label", .text).notNull()
                t.column("upstream", .text).notNull()
                t.column("sourceRef", .text)
                t.column("salt", .text).notNull()
                t.column("status", .text).notNull()
                t.column("publishedAt", .datetime).notNull()
                t.column("statusChangedAt", .datetime).notNull()
                t.primaryKey(["service", "number"])
                t.uniqueKey(["service", "label"])
            }
            // The current split of each service.
            try db.create(table: "split") { t in
                t.primaryKey("service", .text).references("service", onDelete: .restrict)
                t.column("revision", .integer).notNull()
                t.column("stableNumber", .integer).notNull()
                t.column("canaryNumber", .integer)
                t.column("rangeLower", .integer).notNull()
                t.column("rangeUpper", .integer).notNull()
                t.column("nonAuthWeight", .integer).notNull()
                t.column("allowList", .jsonText).notNull()
                t.column("denyList", .jsonText).notNull()
                t.column("optInAllowed", .boolean).notNull()
                t.column("updatedAt", .datetime).notNull()
                t.foreignKey(["service", "stableNumber"], references: "release")
                t.foreignKey(["service", "canaryNumber"], references: "release")
            }
            // Every split a service has had, in revision order.
            try db.create(table: "splitChange") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("service", .text).notNull().references("service", onDelete: .restrict)
                t.column("revision", .integer).notNull()
                t.column("changedAt", .datetime).notNull()
                t.column("actor", .text).notNull()
                t.column("action", .text).notNull()
                t.column("reason", .text)
                t.column("split", .jsonText).notNull()
                t.uniqueKey(["service", "revision"])
            }
            try db.create(table: "rollout") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("service", .text).notNull()
                t.column("releaseNumber", .integer).notNull()
                t.column("state", .text).notNull()
                t.column("step", .integer).notNull().defaults(to: 0)
                t.column("startedAt", .datetime).notNull()
                t.column("updatedAt", .datetime).notNull()
                t.column("endedAt", .datetime)
                t.foreignKey(["service", "releaseNumber"], references: "release")
            }
            try db.create(table: "audit") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("at", .datetime).notNull()
                t.column("service", .text)
                t.column("actor", .text).notNull()
                t.column("action", .text).notNull()
                t.column("command", .text)
                t.column("reason", .text)
                t.column("outcome", .text).notNull()
                t.column("detail", .text)
                t.column("splitBefore", .jsonText)
                t.column("splitAfter", .jsonText)
            }
            try db.create(index: "audit_by_service", on: "audit", columns: ["service", "id"])
            try db.create(table: "metricSample") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("service", .text).notNull()
                t.column("releaseNumber", .integer).notNull()
                t.column("route", .text).notNull()
                t.column("windowStart", .datetime).notNull()
                t.column("windowEnd", .datetime).notNull()
                t.column("requests", .integer).notNull()
                t.column("errors", .integer).notNull()
                t.column("latencyP50Ms", .double)
                t.column("latencyP99Ms", .double)
                t.column("histogram", .blob)
            }
            try db.create(index: "metricSample_by_release", on: "metricSample",
                          columns: ["service", "releaseNumber", "windowStart"])
            try db.create(table: "notification") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("createdAt", .datetime).notNull()
                t.column("service", .text)
                t.column("channel", .text).notNull()
                t.column("text", .text).notNull()
                t.column("attempts", .integer).notNull().defaults(to: 0)
                t.column("nextAttemptAt", .datetime).notNull()
                t.column("deliveredAt", .datetime)
                t.column("lastError", .text)
            }
        }
        migrator.registerMigration("v2-controller") { db in
            // The controller's state of each service's current rollout, compared and swapped by revision.
            try db.create(table: "rolloutState") { t in
                t.primaryKey("service", .text).references("service", onDelete: .restrict)
                t.column("releaseNumber", .integer).notNull()
                t.column("revision", .integer).notNull()
                t.column("state", .jsonText).notNull()
                t.column("updatedAt", .datetime).notNull()
            }
            try db.create(table: "verdict") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("service", .text).notNull()
                t.column("releaseNumber", .integer).notNull()
                t.column("at", .datetime).notNull()
                t.column("outcome", .text).notNull()
                t.column("reason", .text).notNull()
                t.column("critical", .boolean).notNull()
                t.column("numbers", .jsonText).notNull()
            }
            try db.create(index: "verdict_by_release", on: "verdict", columns: ["service", "releaseNumber", "id"])
            // Human orders waiting for the controller's next tick.
            try db.create(table: "controlCommand") { t in
                t.autoIncrementedPrimaryKey("id")
                t.column("service", .text).notNull()
                t.column("command", .jsonText).notNull()
                t.column("createdAt", .datetime).notNull()
                t.column("consumedAt", .datetime)
            }
        }
        migrator.registerMigration("v3-slack") { db in
            // Slack event ids already handled: a retry of one is acknowledged, not run again.
            try db.create(table: "slackEvent") { t in
                t.primaryKey("eventId", .text)
                t.column("receivedAt", .datetime).notNull()
            }
        }
        migrator.registerMigration("v4-lease-and-exactly-once") { db in
            // The right to decide: one row, renewed by its holder, taken over with the next token when it lapses.
            try db.create(table: "controllerLease") { t in
                t.primaryKey("name", .text)
                t.column("lease", .jsonText).notNull()
            }
            // Every controller process seen lately, leading or standing by (for status and the admin API).
            try db.create(table: "controllerPresence") { t in
                t.primaryKey("holder", .text)
                t.column("role", .text).notNull()
                t.column("seenAt", .datetime).notNull()
            }
            // The first answer to each command that carried an id: a retry gets it back and changes nothing.
            try db.create(table: "commandResult") { t in
                t.primaryKey("id", .text)
                t.column("service", .text).notNull()
                t.column("result", .jsonText).notNull()
                t.column("at", .datetime).notNull()
            }
            try db.alter(table: "controlCommand") { t in t.add(column: "commandId", .text) }
            try db.create(index: "controlCommand_by_commandId", on: "controlCommand", columns: ["commandId"], unique: true)
            // Which lease token decided: the tokens of committed decisions never go back.
            try db.alter(table: "verdict") { t in t.add(column: "leaseToken", .integer) }
            try db.alter(table: "audit") { t in t.add(column: "leaseToken", .integer) }
            // A message Slack refused for good (channel_not_found, invalid_auth, …) is set aside, not retried for ever.
            try db.alter(table: "notification") { t in t.add(column: "deadAt", .datetime) }
        }
        migrator.registerMigration("v5-slack-replies") { db in
            // Replies inside a thread, and slash-command replies through their response_url, go through the outbox too.
            try db.alter(table: "notification") { t in
                t.add(column: "threadTs", .text)
                t.add(column: "responseUrl", .text)
            }
        }
        migrator.registerMigration("v6-announcements") { db in
            // Releases announced in the release channel ahead of their rollout (policy `announce`): the first announcement stands.
            try db.create(table: "announcement") { t in
                t.column("service", .text).notNull()
                t.column("number", .integer).notNull()
                t.column("announcedAt", .datetime).notNull()
                t.column("actor", .text).notNull()
                t.column("notes", .text).notNull()
                t.primaryKey(["service", "number"])
                t.foreignKey(["service", "number"], references: "release")
            }
        }
        migrator.registerMigration("v7-platform-releases") { db in
            // The platform release a service's release was published in (its salt is the platform's); null for one of its own.
            try db.alter(table: "release") { t in t.add(column: "platform", .text) }
            try db.create(index: "release_by_platform", on: "release", columns: ["platform"])
        }
        migrator.registerMigration("v8-mirror-and-drain") { db in
            // The share of stable's safe requests copied to the canary (null: none), and the
            // seconds its WebSockets get to close when it loses them (null: the proxy's setting).
            try db.alter(table: "split") { t in
                t.add(column: "mirrorShare", .integer)
                t.add(column: "webSocketDrain", .integer)
            }
        }
        migrator.registerMigration("v9-mirror-routes") { db in
            // Routes besides GET and HEAD the policy marks safe to mirror (JSON; null: none).
            try db.alter(table: "split") { t in t.add(column: "mirrorRoutes", .jsonText) }
        }
        return migrator
    }
}
