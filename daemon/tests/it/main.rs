//! taskd's integration tests, one module per area, in one test binary: the store contract
//! (`store_suite`, run on both backends), the OpenAPI document, and the HTTP router in process
//! (`router`: the guard and the error mapping).

mod openapi;
mod router;
mod store_postgres;
mod store_sqlite;
mod store_suite;
