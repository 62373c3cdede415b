// tessera: run, validate, plan and document block pipelines from YAML recipes.
#include <ATen/Parallel.h>
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <nlohmann/json.hpp>
#include <thread>

#include <tessera/builtins.h>

#include "engine/checkpoint.h"
#include "engine/docs.h"
#include "tessera/image_io.h"
#include "engine/op_profile.h"
#include "tessera/pipeline.h"
#include "tessera/plugin.h"
#include "tessera/runtime.h"
#include "engine/trace.h"
#include "tessera/version.h"
#include "models/common/attention_dispatch.h"
#include "tools/cli/progress.h"
#include "tools/parity/parity.h"

namespace fs = std::filesystem;
using namespace tessera;

namespace {

struct Globals {
  bool quiet = false;
  bool verbose = false;
  int threads = 0;
  std::string attention = "auto";
  std::vector<std::string> plugins;
};

struct Session {
  Registry registry;
  PluginLoader loader{registry};
  explicit Session(const Globals& g) {
    register_builtins(registry);
    for (const auto& p : g.plugins) loader.load(p);
  }
  BuildOptions build_options() {
    BuildOptions o;
    o.load_plugin = [this](const std::string& path, const SourceLoc& where, Registry&) {
      try {
        loader.load(path);
      } catch (const PluginError& e) {
        throw PluginError(e.message(), where, {}, e.hint());
      }
    };
    return o;
  }
  /// `dtype` ("" = as the recipe says): the compute dtype of every model component (--dtype).
  /// `loras` (--lora FILE[:WEIGHT]): fused into every component that takes LoRAs (UNet, text encoders).
  std::unique_ptr<Pipeline> pipeline(const std::string& recipe_path, const std::string& dtype = {},
                                     const std::vector<LoraSpec>& loras = {}) {
    BuildOptions options = build_options();
    if (!dtype.empty() || !loras.empty()) {
      options.manager = std::make_shared<ComponentsManager>();
      if (!dtype.empty()) options.manager->set_dtype_override(dtype);
      options.manager->set_lora_override(loras);
    }
    auto p = Pipeline::from_recipe(load_recipe(recipe_path), registry, options);
    p->validate();
    return p;
  }
};

std::string exit_code_help() {
  std::string s = "Exit codes:\n";
  for (const auto& e : exit_code_table())
    s += "  " + std::to_string(static_cast<int>(e.code)) + "  " + e.name + ": " + e.meaning + "\n";
  return s;
}

std::string file_text(const std::string& path, size_t limit) {
  std::ifstream in(path, std::ios::binary);
  std::string s((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (s.size() > limit) s = s.substr(0, limit) + "\n# … (truncated)\n";
  return s;
}

nlohmann::json value_json(const Value& v) {
  switch (v.kind()) {
    case Kind::Int: return v.to_int();
    case Kind::Float: return v.to_float();
    case Kind::Bool: return v.to_bool();
    case Kind::String: return v.str();
    case Kind::StringList: return v.string_list();
    case Kind::IntList: return v.int_list();
    case Kind::FloatList: return v.float_list();
    default: return v.repr();
  }
}

struct RunArgs {
  std::string recipe;
  std::vector<std::string> sets;
  std::string workflow;
  std::string out = "output.png";
  std::string trace;
  std::vector<std::string> checkpoints;
  std::string dtype;
  std::vector<std::string> loras;  // --lora FILE[:WEIGHT]
  bool profile = false;
  int profile_top = 8;  // operators per block in the --profile report
};

int cmd_run(const Globals& g, const RunArgs& a) {
  auto t0 = std::chrono::steady_clock::now();
  Session session(g);
  std::vector<LoraSpec> loras;
  for (const auto& l : a.loras) {
    // FILE[:WEIGHT]: the weight is what follows the last ':' when that parses as a number (paths may hold ':').
    LoraSpec spec;
    spec.file = l;
    const auto colon = l.rfind(':');
    if (colon != std::string::npos && colon > 0 && !std::filesystem::exists(l)) {
      spec.file = l.substr(0, colon);
      spec.weight = l.substr(colon + 1);
      char* end = nullptr;
      std::strtod(spec.weight.c_str(), &end);
      if (spec.weight.empty() || *end != '\0')
        throw UsageError("--lora " + l + ": the weight '" + spec.weight + "' is not a number",
                         {}, {}, "write --lora FILE[:WEIGHT], e.g. --lora style.safetensors:0.8");
    }
    for (const auto& other : loras)
      if (other.file == spec.file)
        throw UsageError("--lora names '" + spec.file + "' twice", {}, {}, "give each LoRA once");
    loras.push_back(std::move(spec));
  }
  auto pipe = session.pipeline(a.recipe, a.dtype, loras);

  ValueMap inputs;
  for (const auto& kv : a.sets) {
    auto eq = kv.find('=');
    if (eq == std::string::npos || eq == 0)
      throw UsageError("--set expects name=value, got '" + kv + "'", {}, {}, "e.g. --set prompt=\"a red fox\"");
    std::string name = kv.substr(0, eq);
    inputs[name] = pipe->parse_input(name, kv.substr(eq + 1));
  }
  if (!a.workflow.empty()) {
    Plan plan = pipe->plan(a.workflow);
    const auto& wf = pipe->recipe().workflows.at(a.workflow);
    for (const auto& need : wf.inputs) {
      const RecipeInput* ri = pipe->recipe().find_input(need);
      if (!inputs.count(need) && !(ri && ri->default_value))
        throw InputError("workflow '" + a.workflow + "' is given '" + need + "', but no value was set", {a.recipe}, {},
                         "add --set " + need + "=…");
    }
  }

  // Check the output location before the (possibly long) run, not after.
  bool out_is_state = fs::path(a.out).extension() == ".safetensors";
  fs::path out_dir = fs::path(a.out).parent_path();
  if (!out_dir.empty() && !fs::is_directory(out_dir))
    throw OutputError("cannot write '" + a.out + "': folder '" + out_dir.string() + "' does not exist");

  std::vector<CheckpointRequest> requests;
  for (const auto& c : a.checkpoints) requests.push_back(parse_checkpoint_request(c));
  check_checkpoint_paths(pipe->root(), requests);
  std::map<std::string, std::string> meta{{"tessera.recipe_file", a.recipe}};
  std::unique_ptr<CheckpointObserver> ckpt;
  RunOptions opts;
  opts.release_components_after_last_use = true;  // free the text encoders before denoising, the UNet before decoding
  if (!requests.empty()) {
    ckpt = std::make_unique<CheckpointObserver>(requests, meta);
    opts.observers.push_back(ckpt.get());
    opts.resume_after = ckpt->resume_after();
    opts.on_resume = ckpt->on_resume();
  }
  TraceObserver tracer;
  if (!a.trace.empty()) opts.observers.push_back(&tracer);
  std::unique_ptr<OpProfile> profile;
  std::unique_ptr<ProfileObserver> profile_blocks;
  if (a.profile) {
    profile = std::make_unique<OpProfile>();
    profile_blocks = std::make_unique<ProfileObserver>(*profile);
    opts.observers.push_back(profile_blocks.get());
  }
  // Progress on stderr (a bar on a terminal, plain lines elsewhere); Ctrl-C cancels at the next block or step.
  cli::install_interrupt_handler();
  cli::RunProgress progress(!g.quiet, isatty(STDERR_FILENO));
  opts.observers.push_back(&progress);
  opts.step_callbacks.push_back([&progress](const StepInfo& info) { return progress.on_step(info); });

  PipelineState state;
  auto t_run = std::chrono::steady_clock::now();
  try {
    state = pipe->run(inputs, opts);
  } catch (const StopRun& stop) {
    if (!a.trace.empty()) tracer.write_chrome_trace(a.trace);
    if (!g.quiet) std::cout << "stopped after '" << stop.block_path << "'; state written to " << stop.file << "\n";
    return 0;
  }
  catch (const CancelledError& e) {
    if (!cli::interrupted()) throw;
    throw CancelledError("interrupted (SIGINT): " + e.message() + "; no output was written", e.where(),
                         e.block_path());
  }
  double run_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_run).count();
  if (!a.trace.empty()) tracer.write_chrome_trace(a.trace);
  if (profile) {
    std::cout << "profile (per leaf block, outermost ATen operators):\n"
              << profile->report(static_cast<size_t>(a.profile_top));
    profile_blocks.reset();
    profile.reset();
  }

  std::vector<std::string> written;
  if (out_is_state) {
    save_state(a.out, state, meta);
    written.push_back(a.out);
  } else {
    const Value& images = state.get("images");
    if (images.kind() != Kind::Image)
      throw OutputError("the pipeline produced no 'images' to write as PNG (found: " + images.repr() + ")", {}, {},
                        "write the final state instead with --out result.safetensors");
    nlohmann::json in_json = nlohmann::json::object();
    for (const auto& [k, v] : inputs) in_json[k] = value_json(v);
    TextChunks chunks{{"Software", std::string("Tessera ") + TESSERA_VERSION},
                      {"tessera.recipe_file", a.recipe},
                      {"tessera.recipe", file_text(a.recipe, 64 * 1024)},
                      {"tessera.inputs", in_json.dump()}};
    if (state.has("seed")) chunks.push_back({"tessera.seed", state.get("seed").repr()});
    if (!a.workflow.empty()) chunks.push_back({"tessera.workflow", a.workflow});
    written = write_pngs(a.out, images.images().pixels, chunks);
  }
  double total_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  if (!g.quiet) {
    for (const auto& w : written) std::cout << "wrote " << w << "\n";
    std::printf("pipeline %.3f s, total %.3f s (%d threads)\n", run_s, total_s, at::get_num_threads());
    if (!a.trace.empty()) std::cout << "trace: " << a.trace << "\n";
  }
  return 0;
}

int cmd_validate(const Globals& g, const std::vector<std::string>& recipes) {
  int rc = 0;
  for (const auto& path : recipes) {
    try {
      Session session(g);
      auto p = session.pipeline(path);
      if (!g.quiet) {
        size_t leaves = 0;
        walk_blocks(p->root(), [&](const std::string&, const Block& b, const std::vector<const Block*>&) {
          leaves += b.kind() == BlockKind::Leaf;
        });
        std::cout << "OK " << path << " (" << leaves << " blocks";
        if (!p->recipe().workflows.empty()) {
          std::cout << "; workflows:";
          for (const auto& kv : p->recipe().workflows) std::cout << ' ' << kv.first;
        }
        std::cout << ")\n";
      }
    } catch (const Error& e) {
      std::cerr << e.what() << "\n";
      if (rc == 0) rc = static_cast<int>(e.code());
    }
  }
  return rc;
}

int cmd_plan(const Globals& g, const std::string& recipe, const std::string& workflow, const std::string& inputs,
             const std::vector<std::string>& sets) {
  Session session(g);
  auto p = session.pipeline(recipe);
  if (!sets.empty()) {
    // With --set model=…: say where each component comes from (a single file's detected family and configs).
    ValueMap values;
    for (const auto& kv : sets) {
      auto eq = kv.find('=');
      if (eq == std::string::npos || eq == 0)
        throw UsageError("--set expects name=value, got '" + kv + "'", {}, {}, "e.g. --set model=model.safetensors");
      values[kv.substr(0, eq)] = p->parse_input(kv.substr(0, eq), kv.substr(eq + 1));
    }
    std::set<std::string> said;
    for (const auto& spec : p->resolved_components(values)) {
      if (spec.creation != Creation::FromPretrained || spec.from.empty()) continue;
      auto source = session.registry.model_source(spec);
      const std::string line = source ? source->description : "diffusers folder '" + spec.from + "'";
      if (said.insert(line).second) std::cout << "model: " << line << "\n";
      for (const auto& l : spec.loras) std::cout << "lora: " << spec.name << " <- " << l.file << " (weight " << l.weight << ")\n";
    }
    std::cout << "\n";
  }
  if (!workflow.empty()) {
    std::cout << format_plan(p->plan(workflow));
  } else if (!inputs.empty() || p->recipe().workflows.empty()) {
    std::set<std::string> present;
    std::stringstream ss(inputs);
    std::string item;
    while (std::getline(ss, item, ','))
      if (!item.empty()) present.insert(item);
    std::cout << format_plan(p->plan_for_inputs(present));
  } else {
    bool first = true;
    for (const auto& kv : p->recipe().workflows) {
      if (!first) std::cout << "\n";
      first = false;
      std::cout << format_plan(p->plan(kv.first));
    }
  }
  return 0;
}

int cmd_blocks(const Globals& g, const std::string& action, const std::string& id) {
  Session session(g);
  if (action == "list") {
    for (const auto& bid : session.registry.block_ids()) {
      const auto* info = session.registry.find_block(bid);
      std::cout << bid << "  " << info->description;
      if (info->source != "builtin") std::cout << "  [" << info->source << "]";
      std::cout << "\n";
    }
    return 0;
  }
  if (id.empty()) throw UsageError("'tessera blocks show' needs a block id", {}, {}, "list them with 'tessera blocks list'");
  const BlockTypeInfo* info = session.registry.find_block(id);
  if (!info)
    throw ValidationError("unknown block id '" + id + "'", {}, {}, did_you_mean(id, session.registry.block_ids()));
  std::shared_ptr<LeafBlock> block;
  try {
    block = session.registry.create_block(id, {});
  } catch (const ValidationError&) {
    // Params without defaults: the interface depends on them.
  }
  std::cout << block_doc(*info, block.get());
  return 0;
}

int cmd_recipe_doc(const Globals& g, const std::string& recipe) {
  Session session(g);
  auto p = session.pipeline(recipe);
  std::cout << recipe_doc(*p);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Globals g;
  CLI::App app{"tessera: run diffusion pipelines assembled from typed blocks (YAML recipes)"};
  app.footer("\n" + exit_code_help());
  app.set_version_flag("--version", std::string("tessera ") + TESSERA_VERSION + " (LibTorch " + torch_version_string() + ")");
  app.require_subcommand(1);
  app.fallthrough();
  app.add_flag("-q,--quiet", g.quiet, "Print only errors");
  app.add_flag("-v,--verbose", g.verbose, "Print debug logs");
  app.add_option("--threads", g.threads, "Intra-op threads (default: all cores)")->check(CLI::Range(1, 1024));
  app.add_option("--attention", g.attention,
                 "Attention kernel: auto (flash on the CPU, fused SDPA on CUDA with LibTorch 2), flash (blocked, no "
                 "[L, L] score matrix), math, chunked, sdpa")
      ->check(CLI::IsMember({"auto", "flash", "math", "chunked", "sdpa"}))
      ->capture_default_str();
  app.add_option("--plugin", g.plugins, "Load a plugin shared library (repeatable)");

  RunArgs run;
  auto* run_cmd = app.add_subcommand("run", "Run a recipe and write its images");
  run_cmd->add_option("recipe", run.recipe, "Recipe YAML file")->required();
  run_cmd->add_option("--set", run.sets, "Set an input: name=value (repeatable; images take a PNG path)");
  run_cmd->add_option("--workflow", run.workflow, "Check that the inputs of this workflow are given");
  run_cmd->add_option("--out,-o", run.out, "Output: PNG path (batches get -0, -1 … suffixes) or .safetensors for the final state")
      ->capture_default_str();
  run_cmd->add_option("--trace", run.trace, "Write per-block timings as a Chrome trace JSON file");
  run_cmd->add_flag("--profile", run.profile,
                    "Print where the time went: the top ATen operators overall and per leaf block");
  run_cmd->add_option("--profile-top", run.profile_top, "Operators per block in the --profile report")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  run_cmd->add_option("--checkpoint", run.checkpoints, "NAME:save|stop|load[=FILE] at the boundary after block NAME (repeatable)");
  run_cmd->add_option("--lora", run.loras,
                      "Fuse a LoRA (kohya, LoCon or diffusers/PEFT .safetensors) into the UNet and text encoders: "
                      "FILE[:WEIGHT], weight 1 by default (repeatable; LoRAs stack)");
  run_cmd->add_option("--dtype", run.dtype,
                      "Compute dtype of every model component (UNet, VAE, text encoders), overriding the recipe's "
                      "`dtype:`: bf16 (bfloat16 weights and activations; norms and softmax stay float32; fast on CPUs "
                      "with AMX), fp32, or auto (bf16 where this CPU has AMX, else fp32; -v says which and why)")
      ->check(CLI::IsMember({"bf16", "bfloat16", "fp32", "float32", "auto"}));

  std::vector<std::string> validate_files;
  auto* validate_cmd = app.add_subcommand("validate", "Statically validate recipes (no weights are read)");
  validate_cmd->add_option("recipes", validate_files, "Recipe files")->required();

  std::string plan_recipe, plan_workflow, plan_inputs;
  auto* plan_cmd = app.add_subcommand("plan", "Print the blocks a workflow (or a set of inputs) runs, and its components");
  plan_cmd->add_option("recipe", plan_recipe, "Recipe YAML file")->required();
  plan_cmd->add_option("--workflow,-w", plan_workflow, "A workflow named in the recipe");
  plan_cmd->add_option("--inputs", plan_inputs, "Comma-separated inputs assumed present");
  std::vector<std::string> plan_sets;
  plan_cmd->add_option("--set", plan_sets,
                       "Input values for resolving the components (e.g. --set model=x.safetensors: prints the "
                       "detected family and where the configs come from)");

  std::string blocks_action = "list", blocks_id;
  auto* blocks_cmd = app.add_subcommand("blocks", "List block types or show one's generated docs");
  blocks_cmd->add_option("action", blocks_action, "list | show")->check(CLI::IsMember({"list", "show"}));
  blocks_cmd->add_option("id", blocks_id, "Block id (for show)");

  std::string doc_action, doc_recipe;
  auto* recipe_cmd = app.add_subcommand("recipe", "Recipe tools");
  recipe_cmd->add_option("action", doc_action, "doc")->required()->check(CLI::IsMember({"doc"}));
  recipe_cmd->add_option("file", doc_recipe, "Recipe YAML file")->required();

  ParityOptions parity;
  auto* parity_cmd = app.add_subcommand("parity", "Compare Tessera with diffusers on a golden manifest (PASS/FAIL/SKIP per case)");
  parity_cmd->add_option("--manifest", parity.manifest, "Golden manifest.json")->required();
  parity_cmd->add_option("--filter", parity.filter_regex, "Run only cases whose name matches this regex");
  parity_cmd->add_option("--models-dir", parity.models_dir, "Models folder (default: the manifest's, next to it)");
  parity_cmd->add_flag("--verbose", parity.verbose, "One line per compared tensor");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int rc = app.exit(e);
    return rc == 0 ? 0 : static_cast<int>(ExitCode::Usage);
  }

  spdlog::set_level(g.quiet ? spdlog::level::warn : g.verbose ? spdlog::level::debug : spdlog::level::info);
  spdlog::set_pattern("[%l] %v");
  const BlasSelection blas = select_blas_core();  // float32 matmul at the CPU's speed (see include/tessera/runtime.h)
  spdlog::debug("BLAS: {}", blas.reason);
  configure_threads(g.threads);
  set_default_attention_backend(*attention_backend_from_name(g.attention));

  try {
    if (*run_cmd) return cmd_run(g, run);
    if (*validate_cmd) return cmd_validate(g, validate_files);
    if (*plan_cmd) return cmd_plan(g, plan_recipe, plan_workflow, plan_inputs, plan_sets);
    if (*blocks_cmd) return cmd_blocks(g, blocks_action, blocks_id);
    if (*recipe_cmd) return cmd_recipe_doc(g, doc_recipe);
    if (*parity_cmd) {
      register_builtin_case_runners();
      return run_parity(parity, std::cout);
    }
  } catch (const Error& e) {
    std::cerr << "tessera: " << e.what() << "\n";
    return static_cast<int>(e.code());
  } catch (const std::exception& e) {
    std::cerr << "tessera: internal error: " << e.what() << "\n";
    return static_cast<int>(ExitCode::Internal);
  }
  return static_cast<int>(ExitCode::Usage);
}
