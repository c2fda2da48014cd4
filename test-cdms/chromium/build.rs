fn main() {
    // The CDM's C++ class, on the declarations the host uses (one ABI, one header).
    println!("cargo:rerun-if-changed=shim/module.cc");
    println!("cargo:rerun-if-changed=../../gst-plugin-widevine-stub/cdm-shim/cdm_abi.h");
    cc::Build::new()
        .cpp(true)
        .file("shim/module.cc")
        .include("../../gst-plugin-widevine-stub/cdm-shim")
        .flag_if_supported("-std=c++17")
        .warnings(true)
        .compile("amz_test_chromium_module");
}
