//! hello.wasm: the hellofs filesystem ([`hellofs::Hello`]) exported as an
//! fshost guest component.

fshost_sdk::export!(hellofs::Hello);
