// SPDX-License-Identifier: MPL-2.0
// The C++ half of widevinedecrypt's chromium: backend (src/cdm/chromium.rs): a Host object whose
// virtual methods forward to extern "C" Rust callbacks, Buffer and DecryptedBlock
// implementations, and extern "C" functions that call the CDM's virtual methods. No C++
// exception leaves this file.

#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>

#include "cdm_abi.h"

using namespace amzcdm;

extern "C" {
// Implemented in chromium.rs; `ctx` is the Rust host context given to amz_chromium_host_new.
void amz_chromium_on_timer(void* ctx, int64_t delay_ms, void* context);
void amz_chromium_on_initialized(void* ctx, bool success);
void amz_chromium_on_key_status(void* ctx, uint32_t promise, uint32_t status);
void amz_chromium_on_new_session(void* ctx, uint32_t promise, const char* session, uint32_t size);
void amz_chromium_on_resolved(void* ctx, uint32_t promise);
void amz_chromium_on_rejected(void* ctx, uint32_t promise, uint32_t exception,
                              uint32_t system_code, const char* message, uint32_t size);
void amz_chromium_on_message(void* ctx, const char* session, uint32_t session_size,
                             uint32_t type, const char* message, uint32_t size);
void amz_chromium_on_keys_change(void* ctx, const char* session, uint32_t session_size,
                                 const KeyInfo* keys, uint32_t count);
void amz_chromium_on_expiration(void* ctx, const char* session, uint32_t session_size,
                                double expiry);
void amz_chromium_on_closed(void* ctx, const char* session, uint32_t session_size);
// A request the host answers later (from its timer thread), never from inside the CDM's call:
// 1 platform challenge, 2 output protection query, 3 storage id (arg: its version).
void amz_chromium_on_deferred(void* ctx, uint32_t kind, uint32_t arg);
void amz_chromium_on_unsupported(void* ctx, const char* what);
}

namespace {

class HeapBuffer final : public Buffer {
 public:
  explicit HeapBuffer(uint8_t* data, uint32_t capacity) : data_(data), capacity_(capacity) {}
  void Destroy() override { delete this; }
  uint32_t Capacity() const override { return capacity_; }
  uint8_t* Data() override { return data_; }
  void SetSize(uint32_t size) override { size_ = size <= capacity_ ? size : capacity_; }
  uint32_t Size() const override { return size_; }

 private:
  ~HeapBuffer() override { std::free(data_); }
  uint8_t* data_;
  uint32_t capacity_;
  uint32_t size_ = 0;
};

class Block final : public DecryptedBlock {
 public:
  ~Block() override {
    if (buffer_) buffer_->Destroy();
  }
  void SetDecryptedBuffer(Buffer* buffer) override {
    if (buffer_ && buffer_ != buffer) buffer_->Destroy();
    buffer_ = buffer;
  }
  Buffer* DecryptedBuffer() override { return buffer_; }
  void SetTimestamp(int64_t timestamp) override { timestamp_ = timestamp; }
  int64_t Timestamp() const override { return timestamp_; }

 private:
  Buffer* buffer_ = nullptr;
  int64_t timestamp_ = 0;
};

class RustHost final : public Host {
 public:
  explicit RustHost(void* ctx) : ctx_(ctx) {}
  ~RustHost() override {}

  Buffer* Allocate(uint32_t capacity) override {
    uint8_t* data = static_cast<uint8_t*>(std::malloc(capacity ? capacity : 1));
    if (!data) return nullptr;
    HeapBuffer* b = new (std::nothrow) HeapBuffer(data, capacity);
    if (!b) std::free(data);
    return b;
  }
  void SetTimer(int64_t delay_ms, void* context) override {
    amz_chromium_on_timer(ctx_, delay_ms, context);
  }
  WallTime GetCurrentWallTime() override {
    using namespace std::chrono;
    return duration_cast<duration<double>>(system_clock::now().time_since_epoch()).count();
  }
  void OnInitialized(bool success) override { amz_chromium_on_initialized(ctx_, success); }
  void OnResolveKeyStatusPromise(uint32_t promise, uint32_t status) override {
    amz_chromium_on_key_status(ctx_, promise, status);
  }
  void OnResolveNewSessionPromise(uint32_t promise, const char* session,
                                  uint32_t size) override {
    amz_chromium_on_new_session(ctx_, promise, session, size);
  }
  void OnResolvePromise(uint32_t promise) override { amz_chromium_on_resolved(ctx_, promise); }
  void OnRejectPromise(uint32_t promise, uint32_t exception, uint32_t system_code,
                       const char* message, uint32_t size) override {
    amz_chromium_on_rejected(ctx_, promise, exception, system_code, message, size);
  }
  void OnSessionMessage(const char* session, uint32_t session_size, uint32_t type,
                        const char* message, uint32_t size) override {
    amz_chromium_on_message(ctx_, session, session_size, type, message, size);
  }
  void OnSessionKeysChange(const char* session, uint32_t session_size, bool,
                           const KeyInfo* keys, uint32_t count) override {
    amz_chromium_on_keys_change(ctx_, session, session_size, keys, count);
  }
  void OnExpirationChange(const char* session, uint32_t session_size, WallTime expiry) override {
    amz_chromium_on_expiration(ctx_, session, session_size, expiry);
  }
  void OnSessionClosed(const char* session, uint32_t session_size) override {
    amz_chromium_on_closed(ctx_, session, session_size);
  }
  void SendPlatformChallenge(const char*, uint32_t, const char*, uint32_t) override {
    amz_chromium_on_unsupported(ctx_, "SendPlatformChallenge (platform verification)");
    amz_chromium_on_deferred(ctx_, 1, 0);
  }
  void EnableOutputProtection(uint32_t) override {
    amz_chromium_on_unsupported(ctx_, "EnableOutputProtection");
  }
  void QueryOutputProtectionStatus() override {
    amz_chromium_on_unsupported(ctx_, "QueryOutputProtectionStatus");
    amz_chromium_on_deferred(ctx_, 2, 0);
  }
  void OnDeferredInitializationDone(uint32_t, uint32_t) override {}
  void* CreateFileIO(void*) override {
    amz_chromium_on_unsupported(ctx_, "CreateFileIO (storage)");
    return nullptr;
  }
  void RequestStorageId(uint32_t version) override {
    amz_chromium_on_unsupported(ctx_, "RequestStorageId");
    amz_chromium_on_deferred(ctx_, 3, version);
  }

 private:
  void* ctx_;
};

// What amz_chromium_* return: 0, or -1 when the CDM threw a C++ exception.
template <typename F>
int guarded(F f) {
  try {
    f();
    return 0;
  } catch (...) {
    return -1;
  }
}

Module* M(void* m) { return static_cast<Module*>(m); }

}  // namespace

extern "C" {

void* amz_chromium_host_new(void* ctx) {
  try {
    return static_cast<Host*>(new RustHost(ctx));
  } catch (...) {
    return nullptr;
  }
}

void amz_chromium_host_free(void* host) {
  delete static_cast<RustHost*>(static_cast<Host*>(host));
}

int amz_chromium_initialize(void* m, bool distinctive_id, bool persistent_state, bool hw) {
  return guarded([&] { M(m)->Initialize(distinctive_id, persistent_state, hw); });
}

int amz_chromium_create_session(void* m, uint32_t promise, uint32_t init_data_type,
                                const uint8_t* data, uint32_t size) {
  return guarded([&] {
    M(m)->CreateSessionAndGenerateRequest(promise, kSessionTemporary, init_data_type, data,
                                          size);
  });
}

int amz_chromium_update(void* m, uint32_t promise, const char* session, uint32_t session_size,
                        const uint8_t* response, uint32_t size) {
  return guarded([&] { M(m)->UpdateSession(promise, session, session_size, response, size); });
}

int amz_chromium_close(void* m, uint32_t promise, const char* session, uint32_t session_size) {
  return guarded([&] { M(m)->CloseSession(promise, session, session_size); });
}

int amz_chromium_timer_expired(void* m, void* context) {
  return guarded([&] { M(m)->TimerExpired(context); });
}

int amz_chromium_deferred(void* m, uint32_t kind, uint32_t arg) {
  return guarded([&] {
    switch (kind) {
      case 1: {
        struct {
          const uint8_t* p[6];
        } none;
        std::memset(&none, 0, sizeof none);
        M(m)->OnPlatformChallengeResponse(&none);
        break;
      }
      case 2:
        M(m)->OnQueryOutputProtectionStatus(1 /* failed */, 0, 0);
        break;
      case 3:
        M(m)->OnStorageId(arg, nullptr, 0);
        break;
      default:
        break;
    }
  });
}

// Decrypts `input` and copies the clear bytes to `out` (`capacity` bytes), which may be the
// input's own bytes: they are written only once Decrypt has returned. Returns the CDM's status;
// -1 when it threw, -2 when it returned success without a buffer or a larger one.
int amz_chromium_decrypt(void* m, const EncryptedInput* input, uint8_t* out, uint32_t capacity,
                         uint32_t* out_size) {
  try {
    Block block;
    uint32_t status = M(m)->Decrypt(*input, &block);
    if (status != kOk) return static_cast<int>(status);
    Buffer* b = block.DecryptedBuffer();
    if (!b || b->Size() > capacity) return -2;
    std::memcpy(out, b->Data(), b->Size());
    *out_size = b->Size();
    return kOk;
  } catch (...) {
    return -1;
  }
}

int amz_chromium_destroy(void* m) {
  return guarded([&] { M(m)->Destroy(); });
}

}  // extern "C"
