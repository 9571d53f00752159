//! The router: the user-facing side of every replica (DESIGN.md, "Router").
//! So far only its foundations: reaching one gateway with the proof exchange
//! ([`upstream`]) and deciding how to reach it ([`select`]). Nothing is
//! served yet.

pub mod select;
pub mod upstream;
