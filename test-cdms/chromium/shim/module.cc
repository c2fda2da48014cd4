// SPDX-License-Identifier: MPL-2.0
// The C++ half of the test Chromium CDM (src/lib.rs): a Module whose virtual methods forward to
// extern "C" Rust functions, and extern "C" wrappers of the Host's virtual methods for Rust to
// call. No C++ exception leaves this file.

#include <cstring>

#include "cdm_abi.h"

using namespace amzcdm;

extern "C" {
// Implemented in src/lib.rs; `cdm` is the Rust state the module was created with.
void amz_test_cdm_initialize(void* cdm);
void amz_test_cdm_create_session(void* cdm, uint32_t promise, uint32_t init_data_type,
                                 const uint8_t* data, uint32_t size);
void amz_test_cdm_update(void* cdm, uint32_t promise, const char* session, uint32_t session_size,
                         const uint8_t* response, uint32_t size);
void amz_test_cdm_close(void* cdm, uint32_t promise, const char* session, uint32_t session_size);
void amz_test_cdm_reject(void* cdm, uint32_t promise, const char* what);
void amz_test_cdm_timer(void* cdm, void* context);
uint32_t amz_test_cdm_decrypt(void* cdm, const EncryptedInput* input, void* block);
void amz_test_cdm_destroy(void* cdm);
}

namespace {

class TestModule final : public Module {
 public:
  explicit TestModule(void* cdm) : cdm_(cdm) {}

  void Initialize(bool, bool, bool) override { amz_test_cdm_initialize(cdm_); }
  void GetStatusForPolicy(uint32_t promise, const PolicyArg&) override {
    amz_test_cdm_reject(cdm_, promise, "GetStatusForPolicy");
  }
  void SetServerCertificate(uint32_t promise, const uint8_t*, uint32_t) override {
    amz_test_cdm_reject(cdm_, promise, "SetServerCertificate");
  }
  void CreateSessionAndGenerateRequest(uint32_t promise, uint32_t, uint32_t init_data_type,
                                       const uint8_t* data, uint32_t size) override {
    amz_test_cdm_create_session(cdm_, promise, init_data_type, data, size);
  }
  void LoadSession(uint32_t promise, uint32_t, const char*, uint32_t) override {
    amz_test_cdm_reject(cdm_, promise, "LoadSession");
  }
  void UpdateSession(uint32_t promise, const char* session, uint32_t session_size,
                     const uint8_t* response, uint32_t size) override {
    amz_test_cdm_update(cdm_, promise, session, session_size, response, size);
  }
  void CloseSession(uint32_t promise, const char* session, uint32_t session_size) override {
    amz_test_cdm_close(cdm_, promise, session, session_size);
  }
  void RemoveSession(uint32_t promise, const char*, uint32_t) override {
    amz_test_cdm_reject(cdm_, promise, "RemoveSession");
  }
  void TimerExpired(void* context) override { amz_test_cdm_timer(cdm_, context); }
  uint32_t Decrypt(const EncryptedInput& input, DecryptedBlock* output) override {
    return amz_test_cdm_decrypt(cdm_, &input, output);
  }
  uint32_t InitializeAudioDecoder(const void*) override { return kInitFailed; }
  uint32_t InitializeVideoDecoder(const void*) override { return kInitFailed; }
  void DeinitializeDecoder(uint32_t) override {}
  void ResetDecoder(uint32_t) override {}
  uint32_t DecryptAndDecodeFrame(const EncryptedInput&, void*) override { return kDecodeFailed; }
  uint32_t DecryptAndDecodeSamples(const EncryptedInput&, void*) override {
    return kDecodeFailed;
  }
  void OnPlatformChallengeResponse(const void*) override {}
  void OnQueryOutputProtectionStatus(uint32_t, uint32_t, uint32_t) override {}
  void OnStorageId(uint32_t, const uint8_t*, uint32_t) override {}
  void Destroy() override {
    amz_test_cdm_destroy(cdm_);
    delete this;
  }

 private:
  ~TestModule() override {}
  void* cdm_;
};

Host* H(void* h) { return static_cast<Host*>(h); }

}  // namespace

extern "C" {

void* amz_test_module_new(void* cdm) {
  try {
    return static_cast<Module*>(new TestModule(cdm));
  } catch (...) {
    return nullptr;
  }
}

void amz_test_host_initialized(void* h, bool ok) { H(h)->OnInitialized(ok); }
void amz_test_host_new_session(void* h, uint32_t promise, const char* s, uint32_t n) {
  H(h)->OnResolveNewSessionPromise(promise, s, n);
}
void amz_test_host_resolve(void* h, uint32_t promise) { H(h)->OnResolvePromise(promise); }
void amz_test_host_reject(void* h, uint32_t promise, uint32_t exception, uint32_t code,
                          const char* message, uint32_t n) {
  H(h)->OnRejectPromise(promise, exception, code, message, n);
}
void amz_test_host_message(void* h, const char* s, uint32_t n, uint32_t type, const char* m,
                           uint32_t mn) {
  H(h)->OnSessionMessage(s, n, type, m, mn);
}
void amz_test_host_keys(void* h, const char* s, uint32_t n, const KeyInfo* keys,
                        uint32_t count) {
  H(h)->OnSessionKeysChange(s, n, true, keys, count);
}
void amz_test_host_expiration(void* h, const char* s, uint32_t n, double at) {
  H(h)->OnExpirationChange(s, n, at);
}
void amz_test_host_closed(void* h, const char* s, uint32_t n) { H(h)->OnSessionClosed(s, n); }
void amz_test_host_set_timer(void* h, int64_t delay_ms, void* context) {
  H(h)->SetTimer(delay_ms, context);
}
double amz_test_host_wall_time(void* h) { return H(h)->GetCurrentWallTime(); }

// A buffer of the host's of `size` bytes, handed to the block: the CDM writes the clear
// sample straight into it. Null when the host has none.
uint8_t* amz_test_block_alloc(void* h, void* block, uint32_t size) {
  Buffer* b = H(h)->Allocate(size);
  if (!b) return nullptr;
  if (b->Capacity() < size) {
    b->Destroy();
    return nullptr;
  }
  b->SetSize(size);
  static_cast<DecryptedBlock*>(block)->SetDecryptedBuffer(b);
  return b->Data();
}


}  // extern "C"
