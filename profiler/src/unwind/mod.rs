//! User-stack unwinding (being written).
