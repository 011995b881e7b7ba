//! Vigil firmware for QEMU's `mps2-an386` board (Cortex-M4F, thumbv7em-none-eabihf).
//!
//! UART0 (CMSDK APB UART at 0x4000_4000) carries the Vigil protocol; run QEMU with
//! `-serial pty` and point the host's `vigil` commands at the pty. Logs go out through
//! semihosting (or defmt-rtt with the `defmt` feature, for a real board). The update slots
//! live in RAM that start-up code never clears, standing in for flash: a reset keeps them.
//! The update public key is read from the provisioning page at 0x7F000 (under QEMU, write
//! it there with `-device loader,file=key.bin,addr=0x7f000`).
//!
//! At start the firmware measures what one window costs: feature extraction and the head
//! over 1,024 samples, timed with SysTick, which QEMU's `-icount shift=0` drives at a fixed
//! number of instructions per tick (calibrated against a loop of known length).
#![no_std]
#![no_main]
// Register access, the linker-placed update memory and the provisioning page need raw
// pointers; each use says why it is sound.
#![allow(unsafe_code)]

use core::mem::MaybeUninit;
use core::ptr::{addr_of, addr_of_mut};
use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::{entry, exception};
use embedded_io::{ErrorType, Read, Write};
use vigil_core::agent::Agent;
use vigil_core::bearing::BearingGeometry;
use vigil_core::features::{FeatureScratch, FeatureSpec, FEATURE_COUNT, FEATURE_WINDOW};
use vigil_core::head::{HeadRef, PrototypeRef};
use vigil_core::update::slots::Slots;
use vigil_firmware::device::{serve_once, Clock, FirmwareDevice, Identity};
use vigil_firmware::flash::FlashSlots;
use vigil_firmware::monitor::Monitor;

#[cfg(feature = "defmt")]
use defmt_rtt as _;

macro_rules! log {
    ($template:literal $(, $arg:expr)* $(,)?) => {{
        #[cfg(feature = "defmt")]
        defmt::info!($template $(, $arg)*);
        #[cfg(not(feature = "defmt"))]
        semihosting_log::line($template, &[$(&$arg as &dyn semihosting_log::Value),*]);
    }};
}

/// Log lines over semihosting without `core::fmt`, whose formatting machinery costs about
/// 4 KiB of flash: a template's `{}` are replaced by integers and booleans.
#[cfg(not(feature = "defmt"))]
mod semihosting_log {
    use core::cell::RefCell;
    use cortex_m::interrupt::Mutex;
    use cortex_m_semihosting::hio::{self, HostStream};

    /// The host's standard output, opened at the first line.
    static STDOUT: Mutex<RefCell<Option<HostStream>>> = Mutex::new(RefCell::new(None));

    /// Longest line; the rest of a longer one is cut.
    const LINE: usize = 240;

    /// A value a log line shows.
    pub trait Value {
        /// Appends the value's text to `line`.
        fn write(&self, line: &mut Line);
    }

    /// A line being assembled.
    pub struct Line {
        bytes: [u8; LINE],
        len: usize,
    }

    impl Line {
        fn push(&mut self, text: &[u8]) {
            let n = text.len().min(LINE - self.len);
            self.bytes[self.len..self.len + n].copy_from_slice(&text[..n]);
            self.len += n;
        }
    }

    impl Value for u32 {
        fn write(&self, line: &mut Line) {
            let mut digits = [0u8; 10];
            let (mut value, mut at) = (*self, digits.len());
            loop {
                at -= 1;
                digits[at] = b'0' + (value % 10) as u8;
                value /= 10;
                if value == 0 {
                    break;
                }
            }
            line.push(&digits[at..]);
        }
    }

    impl Value for usize {
        fn write(&self, line: &mut Line) {
            (*self as u32).write(line);
        }
    }

    impl Value for bool {
        fn write(&self, line: &mut Line) {
            line.push(if *self { b"true" } else { b"false" });
        }
    }

    impl Value for &str {
        fn write(&self, line: &mut Line) {
            line.push(self.as_bytes());
        }
    }

    /// Writes `template` with each `{}` replaced by the next of `values`, and a newline.
    pub fn line(template: &str, values: &[&dyn Value]) {
        let mut line = Line { bytes: [0; LINE], len: 0 };
        let mut values = values.iter();
        let mut rest = template.as_bytes();
        while let Some(at) = rest.windows(2).position(|w| w == b"{}") {
            line.push(&rest[..at]);
            if let Some(value) = values.next() {
                value.write(&mut line);
            }
            rest = &rest[at + 2..];
        }
        line.push(rest);
        line.push(b"\n");
        cortex_m::interrupt::free(|cs| {
            let mut stdout = STDOUT.borrow(cs).borrow_mut();
            if stdout.is_none() {
                *stdout = hio::hstdout().ok();
            }
            if let Some(stdout) = stdout.as_mut() {
                // A log line the host did not take is lost; the device goes on.
                let _ = stdout.write_all(&line.bytes[..line.len]);
            }
        });
    }
}

/// Bytes of each update slot.
const SLOT_CAPACITY: usize = 2048;
const UPDATE_FLASH_BYTES: usize = FlashSlots::memory_for(SLOT_CAPACITY);
/// The provisioning page: 32 bytes of Ed25519 public key.
const PROVISION_KEY: usize = 0x0007_F000;
/// SysTick reload: one interrupt per millisecond at the board's 25 MHz core clock.
const CORE_HZ: u32 = 25_000_000;
const TICKS_PER_MS: u32 = CORE_HZ / 1000;
/// Stack words are painted with this before use, to find the deepest point reached.
const PAINT: u32 = 0xC5C5_C5C5;

/// The emulated update flash, in RAM that start-up code leaves alone.
#[link_section = ".uninit.vigil_update_flash"]
static mut UPDATE_FLASH: MaybeUninit<[u8; UPDATE_FLASH_BYTES]> = MaybeUninit::uninit();

static MILLIS: AtomicU32 = AtomicU32::new(0);

/// The board's 32 external interrupts (QEMU's mps2-an386 has no more); the firmware polls
/// its UART, so all of them go to the default handler.
#[link_section = ".vector_table.interrupts"]
#[no_mangle]
#[used]
static __INTERRUPTS: [unsafe extern "C" fn(); 32] = [DefaultHandler; 32];

extern "C" {
    /// cortex-m-rt's handler for unexpected exceptions and interrupts.
    fn DefaultHandler();
}

/// The machine this node watches: the reference pump of `vigil simulate` and `vigil demo`.
const SPEC: FeatureSpec =
    FeatureSpec { sample_rate_hz: 16_000.0, shaft_hz: 29.95, bearing: BearingGeometry::deep_groove_6205() };

#[exception]
fn SysTick() {
    MILLIS.fetch_add(1, Ordering::Relaxed);
}

/// Milliseconds and SysTick ticks since start.
struct SysTickClock;

impl SysTickClock {
    /// Core-clock ticks since start.
    fn ticks() -> u64 {
        loop {
            let before = MILLIS.load(Ordering::Relaxed);
            let current = cortex_m::peripheral::SYST::get_current();
            if MILLIS.load(Ordering::Relaxed) == before {
                let within = u64::from(TICKS_PER_MS - 1 - current.min(TICKS_PER_MS - 1));
                return u64::from(before) * u64::from(TICKS_PER_MS) + within;
            }
        }
    }
}

impl Clock for SysTickClock {
    fn uptime_s(&self) -> u32 {
        MILLIS.load(Ordering::Relaxed) / 1000
    }
}

/// CMSDK APB UART0 of the MPS2 boards.
struct Uart;

const UART0: usize = 0x4000_4000;
const DATA: usize = UART0;
const STATE: usize = UART0 + 0x04;
const CTRL: usize = UART0 + 0x08;
const BAUDDIV: usize = UART0 + 0x10;
const TX_FULL: u32 = 1;
const RX_FULL: u32 = 2;

fn reg_read(address: usize) -> u32 {
    // SAFETY: `address` is one of UART0's word-aligned registers, always mapped.
    unsafe { core::ptr::read_volatile(address as *const u32) }
}

fn reg_write(address: usize, value: u32) {
    // SAFETY: as for `reg_read`; writing these registers has no effect on memory.
    unsafe { core::ptr::write_volatile(address as *mut u32, value) }
}

impl Uart {
    fn new() -> Self {
        reg_write(BAUDDIV, 16);
        reg_write(CTRL, 0b11);
        Uart
    }
}

impl ErrorType for Uart {
    type Error = core::convert::Infallible;
}

impl Read for Uart {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let mut n = 0;
        while n < buf.len() {
            if reg_read(STATE) & RX_FULL == 0 {
                if n > 0 {
                    break;
                }
                continue;
            }
            buf[n] = reg_read(DATA) as u8;
            n += 1;
        }
        Ok(n)
    }
}

impl Write for Uart {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Self::Error> {
        for &byte in buf {
            while reg_read(STATE) & TX_FULL != 0 {}
            reg_write(DATA, u32::from(byte));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

extern "C" {
    /// End of the static data (cortex-m-rt): the lowest address the stack may reach.
    static __sheap: u32;
    /// Top of the stack (cortex-m-rt).
    static _stack_start: u32;
}

fn stack_bounds() -> (usize, usize) {
    // Only the addresses of the linker symbols are taken, never their contents.
    (addr_of!(__sheap) as usize, addr_of!(_stack_start) as usize)
}

/// Paints the unused stack below the current frame.
fn paint_stack() {
    let (bottom, _) = stack_bounds();
    let sp = cortex_m::register::msp::read() as usize;
    let mut word = bottom;
    while word + 256 < sp {
        // SAFETY: between the end of the statics and 256 bytes below the live stack
        // pointer nothing is in use; the words are aligned and inside RAM.
        unsafe { core::ptr::write_volatile(word as *mut u32, PAINT) };
        word += 4;
    }
}

/// Deepest stack use since the last painting, in bytes.
fn peak_stack() -> usize {
    let (bottom, top) = stack_bounds();
    let mut word = bottom;
    // SAFETY: reads aligned words of RAM between the statics and the top of the stack.
    while word < top && unsafe { core::ptr::read_volatile(word as *const u32) } == PAINT {
        word += 4;
    }
    top - word
}

/// The Ed25519 public key from the provisioning page.
fn provisioned_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        // SAFETY: the provisioning page is mapped flash, outside the program image.
        *byte = unsafe { core::ptr::read_volatile((PROVISION_KEY + i) as *const u8) };
    }
    key
}

/// A test window: a 3 kHz resonance rung at BPFO, decaying, over noise.
fn test_window(window: &mut [f32; FEATURE_WINDOW]) {
    let period = SPEC.sample_rate_hz / SPEC.orders_hz()[2];
    let ring = vigil_core::dsp::unit(2.0 * core::f32::consts::PI * 3000.0 / SPEC.sample_rate_hz);
    let (mut phase, mut level, mut next_impact) = (vigil_core::dsp::Complex32::new(1.0, 0.0), 0.0f32, 0.0f32);
    let mut noise = 1u32;
    for (i, v) in window.iter_mut().enumerate() {
        if i as f32 >= next_impact {
            level = 1.0;
            next_impact += period;
        }
        noise = noise.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        *v = level * phase.im + ((noise >> 8) as f32 / 16_777_216.0 - 0.5) * 0.1;
        level *= 0.93;
        phase = phase * ring;
    }
}

/// Instructions and SysTick ticks of a delay loop of known length.
fn calibrate() -> (u64, u64) {
    const LOOP_INSTRUCTIONS: u32 = 2_000_000;
    let start = SysTickClock::ticks();
    // cortex-m's delay runs `1 + n / 2` iterations of a two-instruction loop.
    cortex_m::asm::delay(LOOP_INSTRUCTIONS);
    (u64::from(LOOP_INSTRUCTIONS), (SysTickClock::ticks() - start).max(1))
}

/// Feature extraction + head + prototype score of one window, in SysTick ticks.
#[inline(never)]
fn window_cost(scratch: &mut FeatureScratch) -> u64 {
    let mut window = [0.0f32; FEATURE_WINDOW];
    test_window(&mut window);
    let weights = [0.01f32; 4 * FEATURE_COUNT];
    let (bias, mean, var) = ([0.0f32; 4], [0.0f32; FEATURE_COUNT], [1.0f32; FEATURE_COUNT]);
    let mut features = [0.0f32; FEATURE_COUNT];
    let mut logits = [0.0f32; 4];
    let start = SysTickClock::ticks();
    let ok = vigil_core::features::extract(&SPEC, &window, scratch, &mut features).is_ok()
        && HeadRef::new(&weights, &bias, FEATURE_COUNT, 4)
            .and_then(|h| h.logits(&features, &mut logits))
            .is_ok()
        && PrototypeRef::new(&mean, &var).and_then(|p| p.score(&features)).is_ok();
    let ticks = SysTickClock::ticks() - start;
    if ok {
        ticks
    } else {
        0
    }
}

fn fail(what: &str) -> ! {
    log!("vigil-firmware: {}", what);
    cortex_m_semihosting::debug::exit(cortex_m_semihosting::debug::EXIT_FAILURE);
    loop {
        cortex_m::asm::wfi();
    }
}

/// Brings up the clock, the device and the update slots, and restores the committed head.
/// Out of line, so that its temporaries leave the stack before serving starts.
#[inline(never)]
fn start() -> (&'static mut FirmwareDevice<'static, SysTickClock>, Agent<'static, FlashSlots<'static>>) {
    let Some(mut core) = cortex_m::Peripherals::take() else { fail("core peripherals taken twice") };
    core.SYST.set_clock_source(SystClkSource::Core);
    core.SYST.set_reload(TICKS_PER_MS - 1);
    core.SYST.clear_current();
    core.SYST.enable_interrupt();
    core.SYST.enable_counter();

    let public_key = provisioned_key();
    if public_key == [0xFF; 32] {
        log!("vigil-firmware: no update key provisioned at 0x7f000: every update will be refused");
    }
    let identity = Identity {
        name: "mps2-an386",
        software: concat!("vigil-firmware ", env!("CARGO_PKG_VERSION")),
        class_names: "normal,outer_race,inner_race,ball",
        classes: 4,
        public_key,
    };
    // The monitor (15 KiB) is built unconfigured and configured in place, not moved.
    let Some(monitor) = cortex_m::singleton!(: Monitor = Monitor::unconfigured()) else {
        fail("monitor initialised twice")
    };
    if monitor.configure(SPEC).is_err() {
        fail("the feature spec does not fit the window")
    }
    let Some(device) = cortex_m::singleton!(: FirmwareDevice<'static, SysTickClock> =
        FirmwareDevice::new(identity, monitor, SysTickClock))
    else {
        fail("device initialised twice")
    };
    let Some(scratch) = cortex_m::singleton!(: [u8; SLOT_CAPACITY] = [0; SLOT_CAPACITY]) else {
        fail("update scratch initialised twice")
    };
    // SAFETY: the only reference to the update memory, taken once; any byte pattern is a
    // valid u8 and the slots trust nothing they read without its magic, CRC and SHA-256.
    let memory: &'static mut [u8] = unsafe {
        core::slice::from_raw_parts_mut(addr_of_mut!(UPDATE_FLASH).cast::<u8>(), UPDATE_FLASH_BYTES)
    };
    let Ok(slots) = Slots::open(FlashSlots::new(memory)) else { fail("update flash unreadable") };
    let mut agent = Agent::new(slots, scratch);
    match agent.restore(device) {
        Ok(Some(version)) => log!("vigil-firmware: head version {} restored from the update slots", version),
        Ok(None) => log!("vigil-firmware: no committed head; push one with `vigil push`"),
        Err(_) => log!("vigil-firmware: update slots unreadable; running without a head"),
    }
    (device, agent)
}

/// Logs what one window costs, in instructions.
#[inline(never)]
fn measure() {
    let (loop_instructions, loop_ticks) = calibrate();
    let ticks = window_cost(&mut FeatureScratch::default());
    log!(
        "vigil-firmware: one window (features + head + score) took {} SysTick ticks = {} instructions when the clock counts instructions (calibration: {} instructions in {} ticks)",
        ticks as u32,
        (ticks as f32 * loop_instructions as f32 / loop_ticks as f32) as u32,
        loop_instructions as u32,
        loop_ticks as u32
    );
}

#[entry]
fn main() -> ! {
    paint_stack();
    let (device, mut agent) = start();
    measure();
    log!("vigil-firmware: peak stack during start-up {} bytes", peak_stack());
    paint_stack();

    let mut uart = Uart::new();
    log!("vigil-firmware: serving on UART0");
    let (mut reports, mut head, mut stack) =
        (0u64, device.monitor().head().map_or(0, |h| h.version()), 0usize);
    loop {
        let Ok(_) = serve_once(&mut uart, &mut agent, device);
        let monitor = device.monitor();
        if monitor.next_sequence() != reports {
            reports = monitor.next_sequence();
            // Logged as u32: the count wraps in the log only, after four billion reports.
            let overwritten = monitor.counters().reports_overwritten as u32;
            log!(
                "vigil-firmware: {} reports, alarm active: {}, {} overwritten before they were pulled",
                reports as u32,
                monitor.alarm_active(),
                overwritten
            );
        }
        let version = monitor.head().map_or(0, |h| h.version());
        if version != head {
            head = version;
            log!("vigil-firmware: now scoring with head version {}", head);
        }
        let peak = peak_stack();
        if peak > stack {
            stack = peak;
            log!("vigil-firmware: peak stack while serving {} bytes", stack);
        }
    }
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    fail("panic")
}
