//! The mapping layer: cached, validated answers to "where do the bytes of
//! this file range live?", and the data path that turns them into bytes.
//!
//! Reads never see a guest-supplied number that `plugin::convert` has not
//! checked; most reads never enter the guest at all, because the guest
//! returns whole extents and [`cache::MappingCache`] keeps them.

pub mod cache;
pub mod read;
