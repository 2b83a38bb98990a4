// twotower_client: command-line client of a running twotower_server.
//
//   twotower_client retrieve --user u00012 --k 10
//   twotower_client retrieve --user new-user --feature segment=student --feature age=num:23
//                            --feature 'interests=multi:music|travel' --exclude item-0003
//   twotower_client retrieve --user new-user --history item-0003,item-0007
//                            --filter 'brand=b1|b2' --json
//   twotower_client status | reload --bundle DIR | rebuild-index --index HNSW32,Flat | health
//
// Exit status: 0 success, 1 the call failed (or health is not SERVING), 2 usage error.
#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <google/protobuf/util/json_util.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/status/status.h"
#include "util/admin_token.h"
#include "util/file.h"
#include "util/parse_number.h"
#include "util/program_usage.h"
#include "absl/flags/usage.h"
#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "twotower/v1/admin.grpc.pb.h"
#include "twotower/v1/retrieval.grpc.pb.h"

ABSL_FLAG(std::string, address, "127.0.0.1:50051",
          "Retrieval API address (retrieve, health)");
ABSL_FLAG(std::string, admin_address, "127.0.0.1:50052",
          "Admin API address (status, reload, rebuild-index)");
ABSL_FLAG(std::string, tls_ca, "",
          "PEM CA that signed the server's certificate: connect with TLS (the server's --tls_cert)");
ABSL_FLAG(std::string, service_config, "",
          "retrieve: gRPC service config JSON file for the Retrieval channel, e.g. "
          "client/service_config.json (round_robin over every address the target resolves "
          "to, health checking, retry on UNAVAILABLE); target dns:///HOST:PORT");
ABSL_FLAG(std::string, admin_token_file, "",
          "Admin calls: file with the server's admin token (or set TWOTOWER_ADMIN_TOKEN)");
ABSL_FLAG(int, timeout_ms, 0,
          "Deadline of the call, in milliseconds (0 = 5000, or 300000 for reload and "
          "rebuild-index, which load and index a whole model)");
ABSL_FLAG(std::string, user, "", "retrieve: the user id");
ABSL_FLAG(int, k, 10, "retrieve: number of items");
ABSL_FLAG(std::vector<std::string>, feature, {},
          "retrieve: a user feature, repeatable: --feature NAME=VALUE. VALUE is a "
          "categorical token, or typed by a prefix: cat:TOKEN, int:42 (categorical given as "
          "an integer), num:3.5 (numeric), multi:a|b|c (multi-hot; multi: alone = empty "
          "set). Use cat: for a token that itself starts with one of these prefixes. Each "
          "--feature takes one feature, so values may contain commas");
ABSL_FLAG(std::vector<std::string>, exclude, {},
          "retrieve: item ids never to return, comma-separated");
ABSL_FLAG(std::string, history, "",
          "retrieve: comma-separated item ids the user recently interacted with, sent as the "
          "model's `history` feature (a new user's clicks)");
ABSL_FLAG(bool, json, false, "retrieve: print the response as one JSON object");
ABSL_FLAG(bool, include_history_items, false,
          "retrieve: also return the items of the user's history (left out by default)");
ABSL_FLAG(std::string, bundle, "", "reload: bundle directory, as seen by the server");
ABSL_FLAG(std::string, index, "",
          "rebuild-index: FAISS factory string (empty = keep the current one)");
ABSL_FLAG(int, ef_search, 0, "rebuild-index: HNSW search depth (0 = keep current)");
ABSL_FLAG(int, nprobe, 0, "rebuild-index: IVF probes (0 = keep current)");
ABSL_FLAG(std::string, half_first_pass, "",
          "rebuild-index: on|off, the Flat index's fp16 first pass (empty = keep current)");
ABSL_FLAG(std::string, service, "",
          "health: service name to check (empty = the server as a whole)");

namespace {

constexpr char kUsage[] =
    "Client of twotower_server.\n"
    "\n"
    "  twotower_client retrieve --user ID [--k N] [--feature NAME=VALUE ...] "
    "[--filter FEATURE=V1|V2 ...] [--history ID,ID...] [--exclude ID,ID...] "
    "[--include_history_items] [--json] [--service_config FILE]\n"
    "  twotower_client status\n"
    "  twotower_client reload --bundle DIR\n"
    "  twotower_client rebuild-index [--index FACTORY] [--ef_search N] [--nprobe N] [--half_first_pass on|off]\n"
    "  twotower_client health [--service NAME]\n"
    "\n"
    "retrieve and health call --address; status, reload and rebuild-index call "
    "--admin_address.\n"
    "--feature values: TOKEN (categorical), cat:TOKEN, int:42, num:3.5, multi:a|b|c.\n"
    "--filter: only items whose categorical / multi-hot FEATURE has one of the values; "
    "repeatable, every filter must hold.\n"
    "Exit status: 0 ok, 1 the call failed or health is not SERVING, 2 usage error.";

int UsageError(absl::string_view message) {
  std::fprintf(stderr, "error: %.*s\nrun with --help for usage\n",
               static_cast<int>(message.size()), message.data());
  return 2;
}

int RpcError(const grpc::Status& status) {
  std::fprintf(stderr, "error: %s: %s\n", absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())).c_str(),
               status.error_message().c_str());
  return 1;
}

// Adds "authorization: Bearer <token>" when a token is configured; false (after printing
// the error) when --admin_token_file cannot be read.
bool AddAdminToken(grpc::ClientContext* context) {
  absl::StatusOr<std::string> token = twotower::ReadAdminToken(absl::GetFlag(FLAGS_admin_token_file));
  if (!token.ok()) {
    std::fprintf(stderr, "error: --admin_token_file: %s\n", std::string(token.status().message()).c_str());
    return false;
  }
  if (!token->empty()) context->AddMetadata("authorization", "Bearer " + *token);
  return true;
}

void SetDeadline(grpc::ClientContext* context, int default_ms = 5000) {
  const int ms = absl::GetFlag(FLAGS_timeout_ms) > 0 ? absl::GetFlag(FLAGS_timeout_ms) : default_ms;
  context->set_deadline(std::chrono::system_clock::now() + std::chrono::milliseconds(ms));
}

// A channel to `address`: TLS trusting --tls_ca when it is set; with
// `with_service_config`, configured by the --service_config file. Null (after printing
// the error) when --tls_ca or --service_config cannot be read or is refused: an empty CA
// would silently trust the system roots, and a refused service config would fail every
// call with a message that does not name the file.
std::shared_ptr<grpc::Channel> Connect(const std::string& address, bool with_service_config = false) {
  grpc::ChannelArguments arguments;
  const std::string config_file = absl::GetFlag(FLAGS_service_config);
  if (with_service_config && !config_file.empty()) {
    twotower::ReadFileOptions options;
    options.max_bytes = 1 << 20;
    options.regular_only = true;
    absl::StatusOr<std::string> json = twotower::ReadFile(config_file, options);
    if (!json.ok() || absl::StripAsciiWhitespace(*json).empty()) {
      std::fprintf(stderr, "error: --service_config %s: %s\n", config_file.c_str(),
                   json.ok() ? "empty file" : std::string(json.status().message()).c_str());
      return nullptr;
    }
    arguments.SetServiceConfigJSON(*json);
  }
  std::shared_ptr<grpc::ChannelCredentials> credentials = grpc::InsecureChannelCredentials();
  if (const std::string ca_file = absl::GetFlag(FLAGS_tls_ca); !ca_file.empty()) {
    absl::StatusOr<std::string> ca = twotower::ReadFile(ca_file);
    if (!ca.ok() || ca->empty()) {
      std::fprintf(stderr, "error: --tls_ca %s: %s\n", ca_file.c_str(),
                   ca.ok() ? "empty file" : std::string(ca.status().message()).c_str());
      return nullptr;
    }
    grpc::SslCredentialsOptions tls;
    tls.pem_root_certs = *std::move(ca);
    credentials = grpc::SslCredentials(tls);
  }
  std::shared_ptr<grpc::Channel> channel = grpc::CreateCustomChannel(address, credentials, arguments);
  // gRPC parses the service config when it makes the channel; one it refuses (not JSON,
  // an unknown policy, a bad retry policy) gives a "lame" channel whose calls all fail,
  // and which reports a failure at once, where a new channel is IDLE until it connects.
  // gRPC has logged why just above.
  const grpc_connectivity_state state = channel->GetState(/*try_to_connect=*/false);
  if (with_service_config && !config_file.empty() &&
      (state == GRPC_CHANNEL_TRANSIENT_FAILURE || state == GRPC_CHANNEL_SHUTDOWN)) {
    std::fprintf(stderr, "error: --service_config %s: refused by gRPC (not a valid service config)\n",
                 config_file.c_str());
    return nullptr;
  }
  return channel;
}

// Removes every --NAME / -NAME (with "=VALUE" or the next argument) from argv and returns
// the values. absl's std::vector flags keep only the last occurrence and split on commas;
// --feature and --filter are repeatable and their values may hold commas.
std::optional<std::vector<std::string>> ExtractRepeated(int* argc, char** argv, absl::string_view name) {
  std::vector<std::string> values;
  int out = 0;
  for (int i = 0; i < *argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") {  // everything after is positional
      while (i < *argc) argv[out++] = argv[i++];
      break;
    }
    absl::string_view rest = arg;
    if (!absl::ConsumePrefix(&rest, "--")) absl::ConsumePrefix(&rest, "-");
    if (rest.size() == arg.size() || !absl::ConsumePrefix(&rest, name)) {
      argv[out++] = argv[i];
      continue;
    }
    if (absl::ConsumePrefix(&rest, "=")) {
      values.emplace_back(rest);
    } else if (rest.empty() && i + 1 < *argc) {
      values.emplace_back(argv[++i]);
    } else if (rest.empty()) {
      return std::nullopt;  // --NAME without a value
    } else {
      argv[out++] = argv[i];  // another flag that starts with NAME
    }
  }
  *argc = out;
  return values;
}

// "FEATURE=V1|V2..." -> a filter of `request`; false + *error on a malformed one.
bool AddFilter(absl::string_view text, twotower::v1::RetrieveRequest* request, std::string* error) {
  const size_t eq = text.find('=');
  if (eq == absl::string_view::npos || eq == 0 || eq + 1 == text.size()) {
    *error = absl::StrCat("--filter \"", text, "\": expected FEATURE=VALUE|VALUE...");
    return false;
  }
  const absl::string_view feature = text.substr(0, eq);
  for (const twotower::v1::ItemFilter& filter : request->filters()) {
    if (filter.feature() == feature) {
      *error = absl::StrCat("--filter ", feature, " given twice");
      return false;
    }
  }
  twotower::v1::ItemFilter* filter = request->add_filters();
  filter->set_feature(std::string(feature));
  for (absl::string_view value : absl::StrSplit(text.substr(eq + 1), '|')) filter->add_any_of(std::string(value));
  return true;
}

// "NAME=[TYPE:]VALUE" -> an entry of RetrieveRequest.user_features; false + *error on a
// malformed one.
bool AddFeature(absl::string_view text, twotower::v1::RetrieveRequest* request,
                std::string* error) {
  const size_t eq = text.find('=');
  if (eq == absl::string_view::npos || eq == 0) {
    *error = absl::StrCat("--feature \"", text, "\": expected NAME=VALUE");
    return false;
  }
  const std::string name(text.substr(0, eq));
  absl::string_view value = text.substr(eq + 1);
  twotower::v1::FeatureValue feature;
  if (absl::ConsumePrefix(&value, "int:")) {
    int64_t number = 0;
    if (!absl::SimpleAtoi(value, &number)) {
      *error = absl::StrCat("--feature ", name, ": \"", value, "\" is not an integer");
      return false;
    }
    feature.set_categorical_int(number);
  } else if (absl::ConsumePrefix(&value, "num:")) {
    const std::optional<double> number = twotower::ParseNumber(value);
    if (!number.has_value()) {
      *error = absl::StrCat("--feature ", name, ": \"", value, "\" is not a finite number");
      return false;
    }
    feature.set_numeric(*number);
  } else if (absl::ConsumePrefix(&value, "multi:")) {
    twotower::v1::MultiHot* multi = feature.mutable_multi_hot();
    if (!value.empty()) {
      for (absl::string_view token : absl::StrSplit(value, '|')) multi->add_values(std::string(token));
    }
  } else {
    absl::ConsumePrefix(&value, "cat:");
    feature.set_categorical(std::string(value));
  }
  if (!request->mutable_user_features()->insert({name, feature}).second) {
    *error = absl::StrCat("--feature ", name, " given twice");
    return false;
  }
  return true;
}

int Retrieve(const std::vector<std::string>& features, const std::vector<std::string>& filters) {
  twotower::v1::RetrieveRequest request;
  request.set_user_id(absl::GetFlag(FLAGS_user));
  request.set_k(absl::GetFlag(FLAGS_k));
  for (const std::string& text : features) {
    std::string error;
    if (!AddFeature(text, &request, &error)) return UsageError(error);
  }
  for (const std::string& text : filters) {
    std::string error;
    if (!AddFilter(text, &request, &error)) return UsageError(error);
  }
  if (const std::string history = absl::GetFlag(FLAGS_history); !history.empty()) {
    twotower::v1::FeatureValue value;
    for (absl::string_view id : absl::StrSplit(history, ',', absl::SkipEmpty())) {
      value.mutable_multi_hot()->add_values(std::string(id));
    }
    if (!request.mutable_user_features()->insert({"history", value}).second) {
      return UsageError("--history and --feature history=... both given");
    }
  }
  if (request.user_id().empty() && request.user_features().empty()) {
    return UsageError("retrieve needs --user, --feature, --history or several");
  }
  for (const std::string& id : absl::GetFlag(FLAGS_exclude)) {
    if (!id.empty()) request.add_exclude_item_ids(id);
  }
  request.set_include_history_items(absl::GetFlag(FLAGS_include_history_items));

  const std::shared_ptr<grpc::Channel> channel = Connect(absl::GetFlag(FLAGS_address), /*with_service_config=*/true);
  if (channel == nullptr) return 2;
  auto stub = twotower::v1::Retrieval::NewStub(channel);
  grpc::ClientContext context;
  SetDeadline(&context);
  twotower::v1::RetrieveResponse response;
  const grpc::Status status = stub->Retrieve(&context, request, &response);
  if (!status.ok()) return RpcError(status);

  if (absl::GetFlag(FLAGS_json)) {
    google::protobuf::util::JsonPrintOptions options;
    options.preserve_proto_field_names = true;    // item_id, model_version, user_known
    options.always_print_primitive_fields = true;  // user_known: false too
    std::string json;
    if (!google::protobuf::util::MessageToJsonString(response, &json, options).ok()) {
      std::fprintf(stderr, "error: cannot print the response as JSON\n");
      return 1;
    }
    std::printf("%s\n", json.c_str());
    return 0;
  }
  std::printf("model %s, user %s (%s), %d items\n", response.model_version().c_str(),
              request.user_id().empty() ? "-" : request.user_id().c_str(),
              response.user_known() ? "known" : "unknown: served from features / OOV",
              response.items_size());
  int id_width = static_cast<int>(std::strlen("item_id"));
  for (const auto& item : response.items()) {
    id_width = std::max(id_width, static_cast<int>(item.item_id().size()));
  }
  std::printf("%-5s %-*s %s\n", "rank", id_width, "item_id", "score");
  for (int i = 0; i < response.items_size(); ++i) {
    std::printf("%-5d %-*s %.6f\n", i + 1, id_width, response.items(i).item_id().c_str(),
                response.items(i).score());
  }
  return 0;
}

// The Admin API on --admin_address.
std::unique_ptr<twotower::v1::Admin::Stub> AdminStub() {
  return twotower::v1::Admin::NewStub(
      grpc::CreateChannel(absl::GetFlag(FLAGS_admin_address), grpc::InsecureChannelCredentials()));
}

// Deadline (--timeout_ms, else `default_ms`) and token of an admin call; false (after
// printing the error) when the token cannot be read.
bool PrepareAdminCall(grpc::ClientContext* context, int default_ms) {
  SetDeadline(context, default_ms);
  return AddAdminToken(context);
}

// Calls `method` of the Admin API on --admin_address (see PrepareAdminCall): 0 with
// `response` filled in, else the exit status after printing the error (2: the token could
// not be read; 1: the call failed).
template <typename Request, typename Response>
int CallAdmin(grpc::Status (twotower::v1::Admin::Stub::*method)(grpc::ClientContext*, const Request&, Response*),
              const Request& request, int default_ms, Response* response) {
  const std::unique_ptr<twotower::v1::Admin::Stub> stub = AdminStub();
  grpc::ClientContext context;
  if (!PrepareAdminCall(&context, default_ms)) return 2;
  const grpc::Status status = ((*stub).*method)(&context, request, response);
  if (!status.ok()) return RpcError(status);
  return 0;
}

void PrintIndex(const twotower::v1::IndexParams& index) {
  std::printf("index:           %s (ef_search %d, nprobe %d%s%s)\n", index.factory().c_str(),
              index.ef_search(), index.nprobe(), index.half_first_pass() ? ", fp16 first pass" : "",
              index.source() == "bundle" ? ", read from the bundle's index.faiss" : "");
}

int Status() {
  twotower::v1::GetStatusResponse response;
  const int rc = CallAdmin(&twotower::v1::Admin::Stub::GetStatus, twotower::v1::GetStatusRequest(), 5000, &response);
  if (rc != 0) return rc;
  std::printf("model_version:   %s\n", response.model_version().c_str());
  std::printf("bundle_path:     %s\n", response.bundle_path().c_str());
  std::printf("items:           %lld\n", static_cast<long long>(response.item_count()));
  std::printf("embedding_dim:   %d\n", response.embedding_dim());
  PrintIndex(response.index());
  std::printf("uptime:          %.1f s\n", response.uptime_seconds());
  std::printf("requests:        %lld (%lld failed)\n",
              static_cast<long long>(response.requests_total()),
              static_cast<long long>(response.requests_failed()));
  const twotower::v1::LatencySummary& latency = response.retrieve_latency();
  std::printf("retrieve ms:     p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n", latency.p50_ms(),
              latency.p90_ms(), latency.p99_ms(), latency.max_ms());
  std::printf("reloads:         %lld (%lld failed)\n",
              static_cast<long long>(response.reloads_total()),
              static_cast<long long>(response.reloads_failed()));
  std::printf("index searches:  %lld for %lld queries (largest batch %lld; %lld abandoned)\n",
              static_cast<long long>(response.index_searches()),
              static_cast<long long>(response.searched_queries()),
              static_cast<long long>(response.largest_search_batch()),
              static_cast<long long>(response.abandoned_searches()));
  std::printf("listener:        %s\n", response.retrieval_listener_accepting()
                                           ? "accepting"
                                           : "NOT accepting (health NOT_SERVING)");
  std::printf("in flight:       %lld calls, %lld answer bytes\n",
              static_cast<long long>(response.calls_in_flight()),
              static_cast<long long>(response.response_bytes_in_flight()));
  if (response.item_log_applied() > 0 || !response.item_log_error().empty()) {
    std::printf("item log:        %lld records applied%s%s\n", static_cast<long long>(response.item_log_applied()),
                response.item_log_error().empty() ? "" : "; NOT ready: ", response.item_log_error().c_str());
  }
  if (response.has_last_reload()) {
    const twotower::v1::ReloadOutcome& last = response.last_reload();
    std::printf("last reload:     %s %s%s%s\n", last.bundle_path().c_str(),
                last.swapped() ? "swapped in, serving " : "not swapped, serving ",
                last.model_version().c_str(),
                last.error().empty() ? "" : (" (" + last.error() + ")").c_str());
  }
  return 0;
}

int Reload() {
  twotower::v1::ReloadModelRequest request;
  request.set_bundle_path(absl::GetFlag(FLAGS_bundle));
  if (request.bundle_path().empty()) return UsageError("reload needs --bundle");
  twotower::v1::ReloadModelResponse response;
  const int rc = CallAdmin(&twotower::v1::Admin::Stub::ReloadModel, request, 300000, &response);
  if (rc != 0) return rc;
  std::printf("serving %s (was %s): %lld items, loaded in %.2f s\n",
              response.model_version().c_str(), response.previous_model_version().c_str(),
              static_cast<long long>(response.item_count()), response.load_seconds());
  return 0;
}

int RebuildIndex() {
  twotower::v1::RebuildIndexRequest request;
  request.mutable_params()->set_factory(absl::GetFlag(FLAGS_index));
  request.mutable_params()->set_ef_search(absl::GetFlag(FLAGS_ef_search));
  request.mutable_params()->set_nprobe(absl::GetFlag(FLAGS_nprobe));
  if (const std::string half = absl::GetFlag(FLAGS_half_first_pass); half == "on" || half == "off") {
    request.mutable_params()->set_half_first_pass(half == "on");
  } else if (!half.empty()) {
    return UsageError(absl::StrCat("--half_first_pass must be on or off, not \"", half, "\""));
  }
  twotower::v1::RebuildIndexResponse response;
  const int rc = CallAdmin(&twotower::v1::Admin::Stub::RebuildIndex, request, 300000, &response);
  if (rc != 0) return rc;
  std::printf("model %s: %lld items indexed in %.2f s\n", response.model_version().c_str(),
              static_cast<long long>(response.item_count()), response.build_seconds());
  PrintIndex(response.params());
  return 0;
}

// grpc.health.v1.Health/Check through a generic stub: Debian ships no generated health
// stubs, and the two messages are tiny enough to encode by hand.
//   HealthCheckRequest  { string service = 1; }
//   HealthCheckResponse { ServingStatus status = 1; }  // 1 = SERVING, 2 = NOT_SERVING
int Health() {
  const std::string service = absl::GetFlag(FLAGS_service);
  if (service.size() > 127) return UsageError("--service is too long");
  std::string request_bytes;
  if (!service.empty()) {
    request_bytes.push_back(0x0a);  // field 1, length-delimited
    request_bytes.push_back(static_cast<char>(service.size()));  // one-byte varint
    request_bytes += service;
  }
  grpc::Slice slice(request_bytes);
  const grpc::ByteBuffer request(&slice, 1);

  const std::shared_ptr<grpc::Channel> channel = Connect(absl::GetFlag(FLAGS_address));
  if (channel == nullptr) return 2;
  grpc::GenericStub stub(channel);
  grpc::ClientContext context;
  SetDeadline(&context);
  grpc::CompletionQueue queue;
  std::unique_ptr<grpc::GenericClientAsyncResponseReader> call =
      stub.PrepareUnaryCall(&context, "/grpc.health.v1.Health/Check", request, &queue);
  call->StartCall();
  grpc::ByteBuffer response;
  grpc::Status status;
  call->Finish(&response, &status, /*tag=*/nullptr);
  void* tag = nullptr;
  bool ok = false;
  queue.Next(&tag, &ok);
  queue.Shutdown();
  while (queue.Next(&tag, &ok)) {
  }
  if (!status.ok()) return RpcError(status);

  std::vector<grpc::Slice> slices;
  std::string bytes;
  if (response.Dump(&slices).ok()) {
    for (const grpc::Slice& s : slices) {
      bytes.append(reinterpret_cast<const char*>(s.begin()), s.size());
    }
  }
  // Proto3 omits a zero enum, so no bytes means UNKNOWN (0).
  int serving_status = 0;
  if (bytes.size() >= 2 && bytes[0] == 0x08) serving_status = static_cast<unsigned char>(bytes[1]);
  static constexpr const char* kStatusNames[] = {"UNKNOWN", "SERVING", "NOT_SERVING",
                                                 "SERVICE_UNKNOWN"};
  std::printf("%s\n", serving_status >= 0 && serving_status < 4 ? kStatusNames[serving_status]
                                                                 : "UNKNOWN");
  return serving_status == 1 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  std::optional<std::vector<std::string>> features = ExtractRepeated(&argc, argv, "feature");
  if (!features.has_value()) return UsageError("--feature needs a value");
  std::optional<std::vector<std::string>> filters = ExtractRepeated(&argc, argv, "filter");
  if (!filters.has_value()) return UsageError("--filter needs a value");
  const std::vector<char*> positional = twotower::ParseCommandLineWithUsage(argc, argv, kUsage);
  if (positional.size() != 2) {
    return UsageError(positional.size() < 2 ? "no command given" : "one command at a time");
  }
  if (absl::GetFlag(FLAGS_timeout_ms) < 0) return UsageError("--timeout_ms must be >= 0");
  const absl::string_view command = positional[1];
  if (command != "retrieve" && (!features->empty() || !filters->empty() ||
                                !absl::GetFlag(FLAGS_history).empty() || absl::GetFlag(FLAGS_json))) {
    return UsageError("--feature, --filter, --history and --json only apply to retrieve");
  }
  if (command != "retrieve" && !absl::GetFlag(FLAGS_service_config).empty()) {
    return UsageError("--service_config only applies to retrieve");
  }
  if (command == "retrieve") return Retrieve(*features, *filters);
  if (command == "status") return Status();
  if (command == "reload") return Reload();
  if (command == "rebuild-index") return RebuildIndex();
  if (command == "health") return Health();
  return UsageError(absl::StrCat("unknown command \"", command, "\""));
}
