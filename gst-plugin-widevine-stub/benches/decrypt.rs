//! Decryption throughput of `cenc::decrypt_in_place`, one core: `cenc` (AES-128-CTR over whole
//! samples) and `cbcs` (the 1:9 pattern the emulator packages), 16 KiB samples, 1 MiB per pass.
//! `amzmusic-bench` runs this and reads `target/criterion/decrypt/{cenc,cbcs}/new/`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gstwidevinestub::cenc::{decrypt_in_place, Key, Pattern, SampleProtection, Scheme, Subsample};
use std::hint::black_box;

const SAMPLE_BYTES: usize = 16 * 1024;
const SAMPLES: usize = 64;

fn bench(c: &mut Criterion) {
    let key = Key::new([0x3c; 16]);
    let whole = [Subsample {
        clear: 0,
        protected: SAMPLE_BYTES as u32,
    }];
    let mut group = c.benchmark_group("decrypt");
    group.throughput(Throughput::Bytes((SAMPLE_BYTES * SAMPLES) as u64));
    for (name, scheme, iv, subsamples) in [
        ("cenc", Scheme::Cenc, &[7u8; 8][..], &[][..]),
        ("cbcs", Scheme::Cbcs, &[9u8; 16][..], &whole[..]),
    ] {
        let protection = SampleProtection {
            scheme,
            iv,
            subsamples,
            pattern: Pattern { crypt: 1, skip: 9 },
        };
        let mut data = vec![0x5au8; SAMPLE_BYTES * SAMPLES];
        group.bench_function(name, |b| {
            b.iter(|| {
                for sample in data.chunks_exact_mut(SAMPLE_BYTES) {
                    decrypt_in_place(&key, &protection, black_box(sample)).expect("decrypts");
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
