//! napi-build: the link settings a Node addon needs on the target platform.

fn main() {
    napi_build::setup();
}
