//! Prints the OpenAPI document the gateway serves at `GET /api/v1/openapi.json`,
//! built offline from the resource descriptions (`scripts/api-lint` lints it):
//! `cargo run -q -p common --example openapi > openapi.json`.

fn main() -> Result<(), serde_json::Error> {
    let text = serde_json::to_string_pretty(&common::openapi::document())?;
    println!("{text}");
    Ok(())
}
