//! Test helpers shared by the Mixtral crates: closeness checks, seeded data, fixture paths.
//!
//! A dev-dependency only; it depends on none of our crates so there are no dev-dependency cycles.
