//! Upstream side: clusters and endpoints, traffic policy, connecting, per-shard pools.

pub mod addr_policy;
pub mod balancer;
pub mod cluster;
pub mod connect;
pub mod dns;
pub mod h2_pool;
pub mod policy;
pub mod pool;
