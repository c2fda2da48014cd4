fn main() {
    // The C++ half of the chromium: CDM backend (content_decryption_module.h is a C++ ABI).
    println!("cargo:rerun-if-changed=cdm-shim/host.cc");
    println!("cargo:rerun-if-changed=cdm-shim/cdm_abi.h");
    cc::Build::new()
        .cpp(true)
        .file("cdm-shim/host.cc")
        .flag_if_supported("-std=c++17")
        .warnings(true)
        .compile("amz_chromium_host");
    gst_plugin_version_helper::info()
}
