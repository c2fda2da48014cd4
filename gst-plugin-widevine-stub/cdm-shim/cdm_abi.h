// SPDX-License-Identifier: MPL-2.0
// Our own declarations of the C++ ABI of Chromium's library CDM interface
// (media/cdm/api/content_decryption_module.h), written from reading that header: the entry
// points, the plain structs, and the classes whose vtables both sides call through. Only the
// order and types of the virtual methods matter to the ABI; names here are ours. Interface
// versions 10 and 11 have the same vtable shape for every method this project calls (they
// differ in video-decoder argument types only), so one declaration serves both.
//
// Shared by the host shim (gst-plugin-widevine-stub) and the test CDM (test-cdms/chromium).

#ifndef AMZ_CDM_ABI_H
#define AMZ_CDM_ABI_H

#include <stdint.h>

namespace amzcdm {

typedef double WallTime;

// Entry points a CDM library exports (extern "C").
typedef void* (*HostGetter)(int host_version, void* user_data);
typedef void (*InitializeModuleFn)();
typedef void (*DeinitializeModuleFn)();
typedef void* (*CreateInstanceFn)(int cdm_version, const char* key_system, uint32_t key_system_size,
                                  HostGetter get_host, void* user_data);
typedef const char* (*VersionFn)();

enum : uint32_t {
  kOk = 0,
  kMoreData = 1,
  kKeyMissing = 2,
  kInitFailed = 3,
  kDecryptFailed = 4,
  kDecodeFailed = 5,
  kDeferred = 6,
};

enum : uint32_t { kTypeError = 0, kNotSupported = 1, kInvalidState = 2, kQuotaExceeded = 3 };
enum : uint32_t { kSchemeNone = 0, kSchemeCenc = 1, kSchemeCbcs = 2 };
enum : uint32_t { kInitCenc = 0, kInitKeyIds = 1, kInitWebM = 2 };
enum : uint32_t { kSessionTemporary = 0 };
enum : uint32_t { kMsgRequest = 0, kMsgRenewal = 1, kMsgRelease = 2, kMsgIndividualization = 3 };
enum : uint32_t {
  kKeyUsable = 0,
  kKeyInternalError = 1,
  kKeyExpired = 2,
  kKeyOutputRestricted = 3,
  kKeyOutputDownscaled = 4,
  kKeyPending = 5,
  kKeyReleased = 6,
};

struct BlockPattern {
  uint32_t crypt;
  uint32_t skip;
};

struct Subsample {
  uint32_t clear;
  uint32_t cipher;
};

// 80 bytes on 64-bit: explicit padding after each 32-bit size that precedes a pointer.
struct EncryptedInput {
  const uint8_t* data;
  uint32_t data_size;
  uint32_t scheme;
  const uint8_t* key_id;
  uint32_t key_id_size;
  uint32_t pad0;
  const uint8_t* iv;
  uint32_t iv_size;
  uint32_t pad1;
  const Subsample* subsamples;
  uint32_t subsample_count;
  uint32_t pad2;
  BlockPattern pattern;
  int64_t timestamp;
};

struct KeyInfo {
  const uint8_t* key_id;
  uint32_t key_id_size;
  uint32_t status;
  uint32_t system_code;
};

struct PolicyArg {
  uint32_t min_hdcp;
};

class Buffer {
 public:
  virtual void Destroy() = 0;
  virtual uint32_t Capacity() const = 0;
  virtual uint8_t* Data() = 0;
  virtual void SetSize(uint32_t size) = 0;
  virtual uint32_t Size() const = 0;

 protected:
  virtual ~Buffer() {}
};

class DecryptedBlock {
 public:
  virtual void SetDecryptedBuffer(Buffer* buffer) = 0;
  virtual Buffer* DecryptedBuffer() = 0;
  virtual void SetTimestamp(int64_t timestamp) = 0;
  virtual int64_t Timestamp() const = 0;

 protected:
  virtual ~DecryptedBlock() {}
};

// The CDM object (interfaces 10 and 11). Argument types of the video and decoder methods we
// never call are opaque pointers/values of the right size.
class Module {
 public:
  virtual void Initialize(bool allow_distinctive_identifier, bool allow_persistent_state,
                          bool use_hw_secure_codecs) = 0;
  virtual void GetStatusForPolicy(uint32_t promise, const PolicyArg& policy) = 0;
  virtual void SetServerCertificate(uint32_t promise, const uint8_t* cert, uint32_t size) = 0;
  virtual void CreateSessionAndGenerateRequest(uint32_t promise, uint32_t session_type,
                                               uint32_t init_data_type, const uint8_t* init_data,
                                               uint32_t init_data_size) = 0;
  virtual void LoadSession(uint32_t promise, uint32_t session_type, const char* session,
                           uint32_t session_size) = 0;
  virtual void UpdateSession(uint32_t promise, const char* session, uint32_t session_size,
                             const uint8_t* response, uint32_t response_size) = 0;
  virtual void CloseSession(uint32_t promise, const char* session, uint32_t session_size) = 0;
  virtual void RemoveSession(uint32_t promise, const char* session, uint32_t session_size) = 0;
  virtual void TimerExpired(void* context) = 0;
  virtual uint32_t Decrypt(const EncryptedInput& input, DecryptedBlock* output) = 0;
  virtual uint32_t InitializeAudioDecoder(const void* config) = 0;
  virtual uint32_t InitializeVideoDecoder(const void* config) = 0;
  virtual void DeinitializeDecoder(uint32_t stream) = 0;
  virtual void ResetDecoder(uint32_t stream) = 0;
  virtual uint32_t DecryptAndDecodeFrame(const EncryptedInput& input, void* frame) = 0;
  virtual uint32_t DecryptAndDecodeSamples(const EncryptedInput& input, void* frames) = 0;
  virtual void OnPlatformChallengeResponse(const void* response) = 0;
  virtual void OnQueryOutputProtectionStatus(uint32_t result, uint32_t link_mask,
                                             uint32_t protection_mask) = 0;
  virtual void OnStorageId(uint32_t version, const uint8_t* id, uint32_t size) = 0;
  virtual void Destroy() = 0;

 protected:
  virtual ~Module() {}
};

// The host object the CDM calls (interfaces 10 and 11).
class Host {
 public:
  virtual Buffer* Allocate(uint32_t capacity) = 0;
  virtual void SetTimer(int64_t delay_ms, void* context) = 0;
  virtual WallTime GetCurrentWallTime() = 0;
  virtual void OnInitialized(bool success) = 0;
  virtual void OnResolveKeyStatusPromise(uint32_t promise, uint32_t status) = 0;
  virtual void OnResolveNewSessionPromise(uint32_t promise, const char* session,
                                          uint32_t session_size) = 0;
  virtual void OnResolvePromise(uint32_t promise) = 0;
  virtual void OnRejectPromise(uint32_t promise, uint32_t exception, uint32_t system_code,
                               const char* message, uint32_t message_size) = 0;
  virtual void OnSessionMessage(const char* session, uint32_t session_size, uint32_t type,
                                const char* message, uint32_t message_size) = 0;
  virtual void OnSessionKeysChange(const char* session, uint32_t session_size,
                                   bool has_additional_usable_key, const KeyInfo* keys,
                                   uint32_t key_count) = 0;
  virtual void OnExpirationChange(const char* session, uint32_t session_size,
                                  WallTime expiry) = 0;
  virtual void OnSessionClosed(const char* session, uint32_t session_size) = 0;
  virtual void SendPlatformChallenge(const char* service, uint32_t service_size,
                                     const char* challenge, uint32_t challenge_size) = 0;
  virtual void EnableOutputProtection(uint32_t mask) = 0;
  virtual void QueryOutputProtectionStatus() = 0;
  virtual void OnDeferredInitializationDone(uint32_t stream, uint32_t status) = 0;
  virtual void* CreateFileIO(void* client) = 0;
  virtual void RequestStorageId(uint32_t version) = 0;

 protected:
  virtual ~Host() {}
};

static_assert(sizeof(EncryptedInput) == (sizeof(void*) == 8 ? 80 : 64), "EncryptedInput layout");
static_assert(sizeof(KeyInfo) == (sizeof(void*) == 8 ? 24 : 16), "KeyInfo layout");

}  // namespace amzcdm

#endif
