//! Vigil on microcontrollers: the device agent of `vigil-core` over a UART.
//!
//! The firmware runs the DSP feature backbone of `vigil-core` (tract needs std), the same
//! head, prototype and alarm policy as a gateway, keeps reports in a fixed ring, and takes
//! signed head updates into A/B slots over flash. It serves the same protocol as
//! `vigil serve`; hosts use the same `vigil` commands for both. Everything is `no_std`,
//! allocation-free and generic over `embedded_io` (the UART) and [`device::Clock`]; a
//! board supplies those and the flash (see `src/bin/mps2.rs` for QEMU's `mps2-an386`).
#![cfg_attr(not(test), no_std)]

pub mod device;
pub mod flash;
pub mod monitor;

#[cfg(test)]
mod tests;
