// Workspaces: 64-byte aligned blocks from a small pool of recently freed blocks.
//
// glibc hands large freed buffers back to the OS, so a training loop that allocates its
// workspace on every call page-faults it in again each time (that moved a char-rnn-size LSTM
// step between 21 and 32 ms here). Blocks released to the pool are kept (up to a cap) and
// handed out again when a request of a similar size comes, already faulted in.
#pragma once

#include <cstddef>
#include <utility>

namespace rnncore {

class Block {
 public:
  Block() = default;
  explicit Block(std::size_t bytes);  // throws std::bad_alloc (MemoryError in Python)
  ~Block();
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
    return static_cast<T *>(ptr_);
  }
  std::size_t bytes() const { return bytes_; }
  // Give up ownership (for handing a block to NumPy); pair with release_to_pool().
  void *detach(std::size_t *capacity) {
    *capacity = capacity_;
    void *p = ptr_;
    ptr_ = nullptr;
    bytes_ = capacity_ = 0;
    return p;
  }

 private:
  void swap(Block &o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    std::swap(capacity_, o.capacity_);
  }
  void *ptr_ = nullptr;
  std::size_t bytes_ = 0, capacity_ = 0;
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

// Return a detached block's memory to the pool (or free it when the pool is full).
void release_to_pool(void *ptr, std::size_t capacity) noexcept;

// Free every block the pool holds; returns the bytes freed.
std::size_t empty_pool() noexcept;
// Bytes currently held by the pool.
std::size_t pool_bytes() noexcept;

}  // namespace rnncore
