//! Micro-benchmarks of `parse_token_response` on the shapes providers send: a standard JSON
//! body, a form-encoded body with string numbers, and an error inside a 200.
//!
//! Run with `cargo bench -p splice-oauth --bench token_response`; CI only compiles it.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use splice_oauth::response::parse_token_response;

const RECEIVED_AT: i64 = 1_700_000_000_000;

const JSON: &[u8] = br#"{"access_token":"ya29.a0AfH6SMBx3example","token_type":"Bearer","expires_in":3599,"refresh_token":"1//0gexample-refresh","scope":"openid email profile"}"#;
const FORM: &[u8] =
    b"access_token=gho_16C7e42F292c6912E7710c838347Ae178B4a&token_type=bearer&expires_in=28800&scope=repo%2Cgist";
const ERROR_IN_200: &[u8] =
    br#"{"ok":false,"error":"invalid_grant","error_description":"the refresh token was revoked"}"#;

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_token_response");
    group.bench_function("json", |b| {
        b.iter(|| parse_token_response(200, Some("application/json"), black_box(JSON), RECEIVED_AT))
    });
    group.bench_function("form", |b| {
        b.iter(|| {
            parse_token_response(
                200,
                Some("application/x-www-form-urlencoded"),
                black_box(FORM),
                RECEIVED_AT,
            )
        })
    });
    group.bench_function("error_in_200", |b| {
        b.iter(|| {
            parse_token_response(
                200,
                Some("application/json; charset=utf-8"),
                black_box(ERROR_IN_200),
                RECEIVED_AT,
            )
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
