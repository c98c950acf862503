//! Per-process ledger of live mappings (being written).
