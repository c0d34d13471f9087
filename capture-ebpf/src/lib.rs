//! Empty library target: lets the agent declare a build-dependency on this crate so
//! cargo rebuilds the agent when the eBPF sources change (aya-template's approach).
#![no_std]
