//! The SQLite state store: checkpoints, ledger, lookup cache, dead letters, tokens, inbox.
