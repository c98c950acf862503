//! Language runtimes whose frames the native symbolizer cannot name, one module each.
pub mod v8;
