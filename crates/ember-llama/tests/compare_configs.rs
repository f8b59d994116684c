//! Runs the unit tests of `compare_policies`' configuration list (an example's own tests are not
//! run by `cargo test`): every configuration name parses back to its configuration.

#[path = "../../../examples/compare/configs.rs"]
#[allow(dead_code)]
mod configs;
