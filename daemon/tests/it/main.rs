//! taskd's integration tests, one module per area, in one test binary: the store contract
//! (`store_suite`, run on both backends) and the OpenAPI document.

mod openapi;
mod store_postgres;
mod store_sqlite;
mod store_suite;
