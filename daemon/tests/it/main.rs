//! taskd's integration tests, one module per area, in one test binary: the store contract
//! (`store_suite`, run on both backends), the OpenAPI document, the HTTP router in process
//! (`router`: the guard and the error mapping) and the Redis broker in process
//! (`redis_broker`, against a redis-server of its own).

mod openapi;
mod redis_broker;
mod router;
mod store_postgres;
mod store_sqlite;
mod store_suite;
