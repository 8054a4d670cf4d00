#include "common/checkpoint/pickle.h"

#include <cstring>
#include <map>
#include <memory>
#include <utility>

#include "common/core/error.h"

namespace dsmath {
namespace {

enum class Kind { None, Bool, Int, Float, Str, Tuple, List, Dict, Global, Storage, Tensor };
enum class Global { OrderedDict, RebuildTensorV2, RebuildParameter, Storage };

// The opcodes understood, named as in CPython's pickle.py.
enum Op : uint8_t {
  PROTO = 0x80,
  FRAME = 0x95,
  STOP = '.',
  MARK = '(',
  EMPTY_DICT = '}',
  EMPTY_LIST = ']',
  EMPTY_TUPLE = ')',
  NONE = 'N',
  NEWTRUE = 0x88,
  NEWFALSE = 0x89,
  BININT = 'J',
  BININT1 = 'K',
  BININT2 = 'M',
  LONG1 = 0x8a,
  BINFLOAT = 'G',
  BINUNICODE = 'X',
  SHORT_BINUNICODE = 0x8c,
  BINUNICODE8 = 0x8d,
  BINSTRING = 'T',
  SHORT_BINSTRING = 'U',
  TUPLE = 't',
  TUPLE1 = 0x85,
  TUPLE2 = 0x86,
  TUPLE3 = 0x87,
  LIST = 'l',
  DICT = 'd',
  APPEND = 'a',
  APPENDS = 'e',
  SETITEM = 's',
  SETITEMS = 'u',
  BINPUT = 'q',
  LONG_BINPUT = 'r',
  MEMOIZE = 0x94,
  BINGET = 'h',
  LONG_BINGET = 'j',
  POP = '0',
  POP_MARK = '1',
  DUP = '2',
  GLOBAL = 'c',
  STACK_GLOBAL = 0x93,
  BINPERSID = 'Q',
  REDUCE = 'R',
  BUILD = 'b',
};

// Values live in the unpickler's arena and refer to each other by plain pointers, so a
// hostile pickle nesting millions of tuples cannot blow the stack in recursive destructors,
// and reference cycles built through the memo cannot leak.
struct Value;
using V = Value*;

struct Value {
  Kind kind = Kind::None;
  int64_t i = 0;  // Int, Bool
  double f = 0;
  std::string s;                         // Str; Global: "module.name"; Storage: key
  std::vector<V> items;                  // Tuple, List
  std::vector<std::pair<V, V>> entries;  // Dict, in insertion order
  Global global = Global::OrderedDict;   // Global
  DType dtype = DType::F32;              // Storage (Global::Storage), Tensor
  PickledTensor tensor;                  // Tensor
};

const char* kind_name(Kind k) {
  static const char* names[] = {"None", "bool", "int",    "float",   "str",   "tuple",
                                "list", "dict", "global", "storage", "tensor"};
  return names[int(k)];
}

class Unpickler {
 public:
  Unpickler(std::span<const std::byte> data, const std::string& file) : d_(data), file_(file) {}

  V make(Kind k) {
    arena_.push_back(std::make_unique<Value>());
    arena_.back()->kind = k;
    return arena_.back().get();
  }

  V run() {
    while (true) {
      if (pos_ >= d_.size()) bad("ends without STOP (truncated?)");
      const size_t at = pos_;
      const uint8_t op = uint8_t(u(1));
      // clang-format off
      switch (op) {
        case PROTO: u(1); break;
        case FRAME: u(8); break;  // only a read-ahead hint
        case STOP: return pop();
        case MARK: marks_.push_back(stack_.size()); break;
        case EMPTY_DICT: push(make(Kind::Dict)); break;
        case EMPTY_LIST: push(make(Kind::List)); break;
        case EMPTY_TUPLE: push(make(Kind::Tuple)); break;
        case NONE: push(make(Kind::None)); break;
        case NEWTRUE: push_int(1, Kind::Bool); break;
        case NEWFALSE: push_int(0, Kind::Bool); break;
        case BININT: push_int(int64_t(int32_t(uint32_t(u(4))))); break;
        case BININT1: push_int(int64_t(u(1))); break;
        case BININT2: push_int(int64_t(u(2))); break;
        case LONG1: push_int(long1()); break;
        case BINFLOAT: push_float(); break;
        case BINUNICODE: case BINSTRING: push_str(u(4)); break;
        case SHORT_BINUNICODE: case SHORT_BINSTRING: push_str(u(1)); break;
        case BINUNICODE8: push_str(u(8)); break;
        case TUPLE: push(tuple(pop_mark())); break;
        case TUPLE1: push(tuple(popn(1))); break;
        case TUPLE2: push(tuple(popn(2))); break;
        case TUPLE3: push(tuple(popn(3))); break;
        case LIST: { V l = make(Kind::List); l->items = pop_mark(); push(l); break; }
        case DICT: { V d = make(Kind::Dict); set_items(d, pop_mark()); push(d); break; }
        case APPEND: { V x = pop(); expect(top(), Kind::List, "APPEND")->items.push_back(x); break; }
        case APPENDS: { auto xs = pop_mark(); auto& l = expect(top(), Kind::List, "APPENDS")->items;
                        l.insert(l.end(), xs.begin(), xs.end()); break; }
        case SETITEM: { auto kv = popn(2); set_items(expect(top(), Kind::Dict, "SETITEM"), kv); break; }
        case SETITEMS: { auto kv = pop_mark(); set_items(expect(top(), Kind::Dict, "SETITEMS"), kv);
                         break; }
        case BINPUT: memo_[u(1)] = top(); break;
        case LONG_BINPUT: memo_[u(4)] = top(); break;
        case MEMOIZE: memo_[memo_.size()] = top(); break;
        case BINGET: push(memo(u(1))); break;
        case LONG_BINGET: push(memo(u(4))); break;
        case POP: pop(); break;
        case POP_MARK: pop_mark(); break;
        case DUP: push(top()); break;
        case GLOBAL: { std::string m = line(), n = line(); push(global(m, n)); break; }
        case STACK_GLOBAL: { V n = pop(), m = pop();
                             if (m->kind != Kind::Str || n->kind != Kind::Str)
                               bad("STACK_GLOBAL needs two strings");
                             push(global(m->s, n->s)); break; }
        case BINPERSID: push(persistent_load(pop())); break;
        case REDUCE: { V args = pop(), fn = pop(); push(reduce(fn, args)); break; }
        // The state of an OrderedDict: torch's state_dict carries _metadata there; unused.
        case BUILD: pop(); expect(top(), Kind::Dict, "BUILD"); break;
        default:
          bad(cat("uses pickle opcode 0x", std::hex, int(op), std::dec, " at byte ", at,
                  ", which a torch state dict never contains"));
      }
      // clang-format on
    }
  }

 private:
  [[noreturn]] void bad(const std::string& what) const { fail(file_, ": data.pkl ", what); }

  uint64_t u(size_t n) {
    if (d_.size() - pos_ < n) bad("is truncated");
    uint64_t v = 0;
    for (size_t i = n; i-- > 0;) v = v << 8 | uint64_t(d_[pos_ + i]);
    pos_ += n;
    return v;
  }
  std::string bytes(uint64_t n) {
    if (d_.size() - pos_ < n) bad("is truncated (a string runs past its end)");
    std::string s(reinterpret_cast<const char*>(d_.data()) + pos_, size_t(n));
    pos_ += size_t(n);
    return s;
  }
  std::string line() {
    size_t start = pos_;
    while (pos_ < d_.size() && d_[pos_] != std::byte{'\n'}) ++pos_;
    if (pos_ == d_.size()) bad("is truncated (GLOBAL without newline)");
    return std::string(reinterpret_cast<const char*>(d_.data()) + start, pos_++ - start);
  }
  int64_t long1() {
    uint64_t n = u(1);
    if (n > 8) bad(cat("has a ", n, "-byte integer"));
    if (n == 0) return 0;
    uint64_t v = u(n);
    if (n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t(0) << (8 * n);  // sign-extend
    return int64_t(v);
  }

  void push(V v) { stack_.push_back(std::move(v)); }
  void push_int(int64_t i, Kind k = Kind::Int) {
    V v = make(k);
    v->i = i;
    push(v);
  }
  void push_str(uint64_t n) {
    auto v = make(Kind::Str);
    v->s = bytes(n);
    push(v);
  }
  void push_float() {
    uint64_t bits = 0;
    for (int k = 0; k < 8; ++k) bits = bits << 8 | u(1);  // big-endian
    auto v = make(Kind::Float);
    std::memcpy(&v->f, &bits, 8);
    push(v);
  }
  V top() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() == marks_.back()))
      bad("pops an empty stack");
    return stack_.back();
  }
  V pop() {
    V v = top();
    stack_.pop_back();
    return v;
  }
  std::vector<V> popn(size_t n) {
    const size_t floor = marks_.empty() ? 0 : marks_.back();
    if (stack_.size() - floor < n) bad("pops an empty stack");
    std::vector<V> out(stack_.end() - long(n), stack_.end());
    stack_.resize(stack_.size() - n);
    return out;
  }
  std::vector<V> pop_mark() {
    if (marks_.empty()) bad("pops a MARK that was never pushed");
    std::vector<V> out(stack_.begin() + long(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return out;
  }
  V memo(uint64_t k) {
    auto it = memo_.find(k);
    if (it == memo_.end()) bad(cat("reads memo slot ", k, " that was never written"));
    return it->second;
  }
  V expect(const V& v, Kind k, const char* op) {
    if (v->kind != k) bad(cat(op, " applied to a ", kind_name(v->kind)));
    return v;
  }
  V tuple(std::vector<V> items) {
    auto t = make(Kind::Tuple);
    t->items = std::move(items);
    return t;
  }
  void set_items(const V& dict, const std::vector<V>& kv) {
    if (kv.size() % 2) bad("SETITEMS with an odd number of items");
    for (size_t k = 0; k < kv.size(); k += 2) dict->entries.emplace_back(kv[k], kv[k + 1]);
  }

  // The allow-list: everything else is refused by name.
  V global(const std::string& module, const std::string& name) {
    auto g = make(Kind::Global);
    g->s = module + "." + name;
    if (g->s == "collections.OrderedDict")
      g->global = Global::OrderedDict;
    else if (g->s == "torch._utils._rebuild_tensor_v2")
      g->global = Global::RebuildTensorV2;
    else if (g->s == "torch._utils._rebuild_parameter")
      g->global = Global::RebuildParameter;
    else if (g->s == "torch.BFloat16Storage")
      g->global = Global::Storage, g->dtype = DType::BF16;
    else if (g->s == "torch.HalfStorage")
      g->global = Global::Storage, g->dtype = DType::F16;
    else if (g->s == "torch.FloatStorage")
      g->global = Global::Storage, g->dtype = DType::F32;
    else
      bad(cat("asks for global '", g->s,
              "', which is not allowed (only torch tensor-rebuild globals are; the file may be "
              "malicious or hold an unsupported dtype)"));
    return g;
  }

  V persistent_load(const V& pid) {
    const auto& it = pid->items;
    if (pid->kind != Kind::Tuple || it.size() != 5 || it[0]->kind != Kind::Str ||
        it[0]->s != "storage" || it[1]->kind != Kind::Global || it[1]->global != Global::Storage ||
        it[2]->kind != Kind::Str || it[4]->kind != Kind::Int)
      bad("has a persistent id that is not ('storage', <storage type>, key, location, numel)");
    if (it[4]->i < 0) bad(cat("storage '", it[2]->s, "' has negative size ", it[4]->i));
    auto s = make(Kind::Storage);
    s->dtype = it[1]->dtype;
    s->s = it[2]->s;
    s->i = it[4]->i;
    return s;
  }

  std::vector<int64_t> ints(const V& v, const char* what) {
    if (v->kind != Kind::Tuple) bad(cat("tensor ", what, " is a ", kind_name(v->kind)));
    std::vector<int64_t> out;
    for (const V& x : v->items) {
      if (x->kind != Kind::Int) bad(cat("tensor ", what, " holds a ", kind_name(x->kind)));
      out.push_back(x->i);
    }
    return out;
  }

  V reduce(const V& fn, const V& args) {
    if (fn->kind != Kind::Global) bad(cat("calls a ", kind_name(fn->kind)));
    if (args->kind != Kind::Tuple) bad("REDUCE without an argument tuple");
    const auto& a = args->items;
    switch (fn->global) {
      case Global::OrderedDict:
        if (!a.empty()) bad("calls OrderedDict with arguments");
        return make(Kind::Dict);
      case Global::RebuildParameter:
        if (a.size() < 1 || a[0]->kind != Kind::Tensor) bad("_rebuild_parameter of a non-tensor");
        return a[0];
      case Global::RebuildTensorV2: {
        // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
        if (a.size() < 4 || a[0]->kind != Kind::Storage || a[1]->kind != Kind::Int)
          bad("calls _rebuild_tensor_v2 with unexpected arguments");
        auto t = make(Kind::Tensor);
        t->tensor.dtype = a[0]->dtype;
        t->tensor.storage_key = a[0]->s;
        t->tensor.storage_numel = a[0]->i;
        t->tensor.storage_offset = a[1]->i;
        t->tensor.shape = ints(a[2], "size");
        t->tensor.stride = ints(a[3], "stride");
        return t;
      }
      case Global::Storage:
        break;
    }
    bad(cat("calls '", fn->s, "'"));
  }

  std::span<const std::byte> d_;
  const std::string& file_;
  size_t pos_ = 0;
  std::vector<V> stack_;
  std::vector<size_t> marks_;
  std::map<uint64_t, V> memo_;
  std::vector<std::unique_ptr<Value>> arena_;
};

void put_str(std::string& out, const std::string& s) {
  out += 'X';
  for (int k = 0; k < 4; ++k) out += char(uint32_t(s.size()) >> (8 * k));
  out += s;
}

void put_int(std::string& out, int64_t v) {
  if (v >= 0 && v < 256) {
    out += 'K';
    out += char(v);
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    out += 'J';
    for (int k = 0; k < 4; ++k) out += char(uint32_t(int32_t(v)) >> (8 * k));
  } else {
    out += '\x8a';  // LONG1, 8 bytes two's complement
    out += '\x08';
    for (int k = 0; k < 8; ++k) out += char(uint64_t(v) >> (8 * k));
  }
}

void put_tuple(std::string& out, const std::vector<int64_t>& xs) {
  out += '(';
  for (int64_t x : xs) put_int(out, x);
  out += 't';
}

const char* storage_global(DType t) {
  switch (t) {
    case DType::BF16:
      return "ctorch\nBFloat16Storage\n";
    case DType::F16:
      return "ctorch\nHalfStorage\n";
    case DType::F32:
      return "ctorch\nFloatStorage\n";
  }
  return "";
}

}  // namespace

std::vector<PickledTensor> unpickle_state_dict(std::span<const std::byte> pkl,
                                               const std::string& file) {
  Unpickler unpickler(pkl, file);
  V root = unpickler.run();
  if (root->kind != Kind::Dict)
    fail(file, ": data.pkl holds a ", kind_name(root->kind), ", not a dict of tensors");
  std::vector<PickledTensor> out;
  for (const auto& [k, v] : root->entries) {
    if (k->kind != Kind::Str) fail(file, ": data.pkl has a ", kind_name(k->kind), " key");
    if (v->kind != Kind::Tensor)
      fail(file, ": data.pkl entry '", k->s, "' is a ", kind_name(v->kind), ", not a tensor");
    out.push_back(v->tensor);
    out.back().name = k->s;
  }
  return out;
}

std::string pickle_state_dict(const std::vector<PickledTensor>& tensors) {
  std::string out = "\x80\x02}(";  // PROTO 2, EMPTY_DICT, MARK
  for (const PickledTensor& t : tensors) {
    put_str(out, t.name);
    out += "ctorch._utils\n_rebuild_tensor_v2\n((";
    put_str(out, "storage");
    out += storage_global(t.dtype);
    put_str(out, t.storage_key);
    put_str(out, "cpu");
    put_int(out, t.storage_numel);
    out += "tQ";  // TUPLE, BINPERSID
    put_int(out, t.storage_offset);
    put_tuple(out, t.shape);
    put_tuple(out, t.stride);
    out +=
        "\x89"
        "ccollections\nOrderedDict\n)R";  // requires_grad=False, OrderedDict()
    out += "tR";                          // args TUPLE, REDUCE
  }
  out += "u.";  // SETITEMS, STOP
  return out;
}

}  // namespace dsmath
