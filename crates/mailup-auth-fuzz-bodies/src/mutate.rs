//! The stable driver: replays a corpus, then mutates it at random with a seeded PRNG
//! (libFuzzer's classic mutations without the coverage feedback), a bounded number of times.

use std::panic::{catch_unwind, AssertUnwindSafe};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::Target;

/// Bytes that the parsers care about, spliced in by the mutator.
const DICTIONARY: &[&[u8]] = &[
    b"\"access_token\":",
    b"\"refresh_token\":",
    b"\"expires_in\":",
    b"\"error\":\"invalid_grant\"",
    b"\"error_description\":",
    b"\"ErrorCode\":",
    b"{\"format\":1,\"version\":",
    b"\"deleted\":true",
    b"\"record\":",
    b"\"tokens\":",
    b"null",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"0.5",
    b"\\u0000",
    b"\r\n",
    b"<html>",
    b"state=expected-state",
    b"&code=",
    b"?",
    b"%00",
    b"//",
    b"/../",
    b"@",
    b"http://",
    b"https://",
    b"Wed, 21 Oct 2015 07:28:00 GMT",
    b"\xff\xfe",
];

/// The outcome of a stable run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StableRun {
    /// Inputs executed: the corpus replayed, then the mutants.
    pub executions: u64,
    /// How many of them were corpus files.
    pub corpus: u64,
}

/// Replays `corpus` through `target`, then runs `mutants` inputs made by mutating corpus
/// entries with a PRNG seeded by `seed`. Panics on the first broken invariant, naming the
/// target and the input (hex) so it can be committed as a reproducer.
pub fn run_stable(target: Target, corpus: &[Vec<u8>], mutants: u64, seed: u64) -> StableRun {
    let mut executions = 0;
    for input in corpus {
        execute(target, input);
        executions += 1;
    }
    let mut rng = StdRng::seed_from_u64(seed ^ fnv(target.name.as_bytes()));
    let fallback = [Vec::new()];
    let pool = if corpus.is_empty() {
        &fallback[..]
    } else {
        corpus
    };
    for _ in 0..mutants {
        let base = &pool[rng.gen_range(0..pool.len())];
        let other = &pool[rng.gen_range(0..pool.len())];
        let input = mutate(&mut rng, base, other);
        execute(target, &input);
        executions += 1;
    }
    StableRun {
        executions,
        corpus: corpus.len() as u64,
    }
}

fn execute(target: Target, input: &[u8]) {
    if let Err(panic) = catch_unwind(AssertUnwindSafe(|| (target.body)(input))) {
        let message = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        panic!(
            "fuzz target {} failed: {message}\ninput ({} bytes, hex; save it under \
             fuzz/corpus/{}/ to replay it): {}",
            target.name,
            input.len(),
            target.name,
            hex(input)
        );
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The longest input the mutator makes.
const MAX_LEN: usize = 4096;

fn mutate(rng: &mut StdRng, base: &[u8], other: &[u8]) -> Vec<u8> {
    let mut data = base.to_vec();
    let rounds = rng.gen_range(1..=4);
    for _ in 0..rounds {
        let len = data.len();
        match rng.gen_range(0..9) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                data[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let i = rng.gen_range(0..len);
                data[i] =
                    [0, 1, 0x7f, 0x80, 0xff, b'"', b'\\', b'{', b'}', b'0'][rng.gen_range(0..10)];
            }
            2 if len > 0 => {
                let start = rng.gen_range(0..len);
                let end = rng.gen_range(start..=len.min(start + 16));
                data.drain(start..end);
            }
            3 => {
                let at = rng.gen_range(0..=len);
                let count = rng.gen_range(1..=8);
                let bytes: Vec<u8> = (0..count).map(|_| rng.gen()).collect();
                data.splice(at..at, bytes);
            }
            4 => {
                let at = rng.gen_range(0..=len);
                let word = DICTIONARY[rng.gen_range(0..DICTIONARY.len())];
                data.splice(at..at, word.iter().copied());
            }
            5 if len > 0 => {
                // Truncate: cut a body short, as the network does.
                data.truncate(rng.gen_range(0..len));
            }
            6 if !other.is_empty() => {
                // Splice: the head of this one, the tail of another.
                let cut = rng.gen_range(0..=len);
                let from = rng.gen_range(0..other.len());
                data.truncate(cut);
                data.extend_from_slice(&other[from..]);
            }
            7 if len > 1 => {
                // Duplicate a slice (repeated fields, repeated parameters).
                let start = rng.gen_range(0..len);
                let end = rng.gen_range(start..=len.min(start + 32));
                let copy = data[start..end].to_vec();
                let at = rng.gen_range(0..=len);
                data.splice(at..at, copy);
            }
            _ if len > 0 => {
                let i = rng.gen_range(0..len);
                data[i] = data[i].wrapping_add(rng.gen_range(1..=3));
            }
            _ => data.push(rng.gen()),
        }
    }
    data.truncate(MAX_LEN);
    data
}
