// Workspaces: 64-byte aligned blocks, reused through the pool of the object that made them.
//
// glibc hands large freed buffers back to the OS, so a training loop that allocates its
// workspace on every call page-faults it in again each time (that moved a char-rnn-size LSTM
// step between 21 and 32 ms). A BlockPool belongs to one owner -- a layer object, a model, a
// benchmark loop -- never to the process: while it is the calling thread's current pool
// (PoolScope, or `with pool:` in Python), every Block made draws from it and goes back to it
// when freed (a kernel's cache, its scratch, the arrays it returns), so the owner's next call of
// the same shapes finds its buffers already faulted in. Without a current pool a Block is a
// plain allocation, freed when released.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <utility>
#include <vector>

namespace rnncore {

class BlockPool {
 public:
  // Keeps at most max_blocks freed blocks and max_bytes bytes (the oldest go first).
  explicit BlockPool(std::size_t max_blocks = 64, std::size_t max_bytes = std::size_t(1) << 30);
  ~BlockPool();
  BlockPool(const BlockPool &) = delete;
  BlockPool &operator=(const BlockPool &) = delete;

  // A kept block of capacity in [want, 2*want] (the best fit), or {nullptr, 0} (counted as a
  // fresh allocation: the caller makes one).
  std::pair<void *, std::size_t> take(std::size_t want);
  // Keep a freed block (or free it, and the oldest, past the limits).
  void give(void *ptr, std::size_t capacity) noexcept;
  std::size_t clear() noexcept;  // free every kept block; returns their bytes

  struct Stats {
    std::size_t bytes, blocks;  // kept now
    std::size_t reused, fresh;  // requests served from the pool / by a new allocation
  };
  Stats stats() const;
  std::size_t max_blocks() const { return max_blocks_; }
  std::size_t max_bytes() const { return max_bytes_; }

 private:
  mutable std::mutex mu_;
  std::vector<std::pair<void *, std::size_t>> free_;  // (pointer, capacity), oldest first
  std::size_t max_blocks_, max_bytes_, bytes_ = 0, reused_ = 0, fresh_ = 0;
};

// The calling thread's current pool (nullptr: none). PoolScope makes one current for a scope;
// push_pool / pop_pool do the same for Python's `with` (pop_pool: false if p is not on top).
std::shared_ptr<BlockPool> current_pool();
void push_pool(std::shared_ptr<BlockPool> p);
bool pop_pool(const BlockPool *p);
class PoolScope {
 public:
  explicit PoolScope(std::shared_ptr<BlockPool> p) : p_(p.get()) { push_pool(std::move(p)); }
  ~PoolScope() { pop_pool(p_); }
  PoolScope(const PoolScope &) = delete;
  PoolScope &operator=(const PoolScope &) = delete;

 private:
  const BlockPool *p_;
};

// Memory of a block handed on (to NumPy): give it back with release_block.
struct Detached {
  void *ptr = nullptr;
  std::size_t capacity = 0;
  std::shared_ptr<BlockPool> pool;  // nullptr: plain allocation
};
void release_block(Detached &d) noexcept;

class Block {
 public:
  Block() = default;
  // From the current pool where there is one; throws std::bad_alloc (MemoryError in Python).
  explicit Block(std::size_t bytes);
  ~Block() { release_block(mem_); }
  Block(Block &&o) noexcept { swap(o); }
  Block &operator=(Block &&o) noexcept {
    Block tmp(std::move(o));
    swap(tmp);
    return *this;
  }
  Block(const Block &) = delete;
  Block &operator=(const Block &) = delete;

  template <typename T>
  T *as() const {
    return static_cast<T *>(mem_.ptr);
  }
  std::size_t bytes() const { return bytes_; }
  // Give up ownership (for handing a block to NumPy); pair with release_block().
  Detached detach() {
    Detached d = std::move(mem_);
    mem_ = Detached{};
    bytes_ = 0;
    return d;
  }

 private:
  void swap(Block &o) noexcept {
    std::swap(mem_, o.mem_);
    std::swap(bytes_, o.bytes_);
  }
  Detached mem_;
  std::size_t bytes_ = 0;
};

// Named buffers from one block, as llm.c's activation structs: a layout's carve(Carver &, ...)
// takes its buffers in order. Run once on a counting Carver for the size, then on the block
// (carve_block); every buffer starts on a 64-byte boundary, as a Block of its own would.
class Carver {
 public:
  Carver() = default;  // counts only: take() returns nullptr
  explicit Carver(void *base) : base_(static_cast<char *>(base)) {}
  template <typename T>
  T *take(std::size_t n) {
    T *p = base_ ? reinterpret_cast<T *>(base_ + used_) : nullptr;
    used_ += (n * sizeof(T) + 63) / 64 * 64;
    return p;
  }
  std::size_t bytes() const { return used_; }

 private:
  char *base_ = nullptr;
  std::size_t used_ = 0;
};

// One block holding the buffers of Layout (Layout::carve(Carver &, args...)), and where they are.
template <typename Layout>
struct Carved {
  Block block;
  Layout at;
};
template <typename Layout, typename... Args>
Carved<Layout> carve_block(const Args &...args) {
  Carver count;
  Layout::carve(count, args...);
  Carved<Layout> out{Block(count.bytes()), {}};
  Carver at(out.block.template as<void>());
  out.at = Layout::carve(at, args...);
  return out;
}

}  // namespace rnncore
