namespace Warren.Platform.Storage;

/// <summary>
/// The platform's own schema. Times are INTEGER unix milliseconds UTC unless a column says otherwise.
/// Append new migrations; never edit one that has shipped.
/// </summary>
internal static class CoreMigrations
{
    public static readonly SchemaMigration[] All =
    [
        new("0001-core", """
            CREATE TABLE accounts (
                id          TEXT PRIMARY KEY,
                email       TEXT NOT NULL UNIQUE,
                created_at  INTEGER NOT NULL
            );

            CREATE TABLE account_keys (
                id            TEXT PRIMARY KEY,
                account_id    TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                public_key    TEXT NOT NULL,
                fingerprint   TEXT NOT NULL UNIQUE,   -- a key belongs to at most one account platform-wide
                name          TEXT NOT NULL,
                added_at      INTEGER NOT NULL,
                last_used_at  INTEGER,
                permissions   TEXT,                   -- JSON ApiKeyPermissions, for generate-api-key keys
                UNIQUE (account_id, name)
            );
            CREATE INDEX account_keys_account ON account_keys(account_id);

            CREATE TABLE vms (
                id                   TEXT PRIMARY KEY,
                name                 TEXT NOT NULL UNIQUE,   -- names are global
                account_id           TEXT NOT NULL REFERENCES accounts(id),
                image                TEXT NOT NULL,
                image_digest         TEXT,
                state                TEXT NOT NULL,
                state_reason         TEXT,
                slot_name            TEXT,
                tags                 TEXT NOT NULL DEFAULT '[]',
                comment              TEXT NOT NULL DEFAULT '',
                cpus                 REAL NOT NULL,
                memory_bytes         INTEGER NOT NULL,
                disk_bytes           INTEGER NOT NULL,
                proxy_port           INTEGER NOT NULL DEFAULT 80,
                exposed_ports        TEXT NOT NULL DEFAULT '[]',
                env                  TEXT NOT NULL DEFAULT '{}',
                command_mode         TEXT NOT NULL,
                custom_command       TEXT,
                setup_script         TEXT,
                login_user           TEXT,
                source_vm_id         TEXT,                   -- set while a cp is being created
                is_public            INTEGER NOT NULL DEFAULT 0,
                proxy_port_override  INTEGER,
                receive_email        INTEGER NOT NULL DEFAULT 0,
                created_at           INTEGER NOT NULL,
                updated_at           INTEGER NOT NULL
            );
            CREATE INDEX vms_account ON vms(account_id);

            -- Which VM an account reaches on a slot: the allocation invariant as a constraint.
            CREATE TABLE ssh_reach (
                account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                slot_name   TEXT NOT NULL,
                vm_id       TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
                PRIMARY KEY (account_id, slot_name),
                UNIQUE (account_id, vm_id)
            );
            CREATE INDEX ssh_reach_vm ON ssh_reach(vm_id);

            CREATE TABLE vm_shares (
                vm_id       TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
                email       TEXT NOT NULL,
                status      TEXT NOT NULL,           -- pending | active
                ssh         INTEGER NOT NULL DEFAULT 0,
                invited_at  INTEGER NOT NULL,
                PRIMARY KEY (vm_id, email)
            );
            CREATE INDEX vm_shares_email ON vm_shares(email);

            CREATE TABLE share_links (
                token_hash    TEXT PRIMARY KEY,      -- SHA-256 of the token; the token itself is never stored
                vm_id         TEXT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
                token_hint    TEXT NOT NULL,
                created_at    INTEGER NOT NULL,
                use_count     INTEGER NOT NULL DEFAULT 0,
                last_used_at  INTEGER
            );
            CREATE INDEX share_links_vm ON share_links(vm_id);

            CREATE TABLE vm_stats (
                vm_id               TEXT NOT NULL,
                resolution_seconds  INTEGER NOT NULL,  -- 0 = raw sample
                ts                  INTEGER NOT NULL,  -- unix seconds (bucket start for aggregates)
                samples             INTEGER NOT NULL,
                cpu_percent         REAL NOT NULL,
                memory_used         INTEGER NOT NULL,
                memory_limit        INTEGER NOT NULL,
                disk_used           INTEGER NOT NULL,
                net_rx              INTEGER NOT NULL,
                net_tx              INTEGER NOT NULL,
                PRIMARY KEY (vm_id, resolution_seconds, ts)
            );

            CREATE TABLE audit_log (
                id               INTEGER PRIMARY KEY AUTOINCREMENT,
                at               INTEGER NOT NULL,
                account_id       TEXT,
                key_fingerprint  TEXT,
                source           TEXT,
                command          TEXT NOT NULL,
                arguments        TEXT,
                result           TEXT NOT NULL,
                error_code       TEXT,
                duration_ms      INTEGER
            );
            CREATE INDEX audit_log_account ON audit_log(account_id, id);
            """),

        // Whether the account's address was proven (a code mailed to it, a login link mailed to it, or the operator
        // adding the account). Rows from before this column cannot be told apart from sign-ups that skipped the
        // check (the old dev default), so they start unverified: shares to them go back to pending (and the SSH
        // routes those gave are dropped), sites get no identity headers, until the address is verified once (a login
        // link mailed to it, or the operator's `warren user add`); then the shares become active again. Owners keep
        // their own VMs.
        new("0002-account-email-verified", """
            ALTER TABLE accounts ADD COLUMN email_verified INTEGER NOT NULL DEFAULT 0;
            UPDATE vm_shares SET status = 'pending' WHERE status = 'active';
            DELETE FROM ssh_reach WHERE vm_id IN (SELECT v.id FROM vms v WHERE v.account_id <> ssh_reach.account_id);
            """),

        // Registry images an account pulled through Warren, confirmed by the registry with the account's own
        // credential or anonymously: the evidence behind each VM made from a registry image.
        new("0003-image-grants", """
            CREATE TABLE image_grants (
                account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                reference   TEXT NOT NULL,           -- canonical name:tag the account asked for
                digest      TEXT NOT NULL,           -- the manifest the registry served
                granted_at  INTEGER NOT NULL,        -- last confirmation
                PRIMARY KEY (account_id, reference, digest)
            );
            """),

        // defaults write/read/delete (exe.dev's per-account settings, e.g. dev.exe new.setup-script).
        new("0004-account-defaults", """
            CREATE TABLE account_defaults (
                account_id  TEXT NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
                domain      TEXT NOT NULL,
                key         TEXT NOT NULL,
                value       TEXT NOT NULL,
                PRIMARY KEY (account_id, domain, key)
            );
            """),

        // Sign-up verification links (Accounts/EmailVerifications.cs): kept across restarts, by the hash of the token.
        new("0005-email-verifications", """
            CREATE TABLE email_verifications (
                token_hash  TEXT PRIMARY KEY,          -- hex SHA-256 of the token; the token itself is only in the mail
                email       TEXT NOT NULL,
                purpose     TEXT NOT NULL,             -- ssh-signup | web-signup
                redirect    TEXT,
                created_at  INTEGER NOT NULL,
                expires_at  INTEGER NOT NULL
            );
            CREATE INDEX email_verifications_email ON email_verifications(email, created_at);
            CREATE INDEX email_verifications_expiry ON email_verifications(expires_at);
            """),

        // Who logged into each VM's site: recipients the email gateway accepts (Mail/SiteVisitorLog).
        Mail.SiteVisitorLog.Migration,
    ];
}
