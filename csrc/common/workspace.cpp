#include "common/workspace.h"

#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

namespace rnncore {

namespace {

constexpr std::size_t kAlign = 64;
constexpr std::size_t kMaxBlocks = 16;
constexpr std::size_t kMaxPoolBytes = std::size_t(1) << 30;  // 1 GiB kept at most

struct Pool {
  std::mutex mu;
  std::vector<std::pair<void *, std::size_t>> free;  // (pointer, capacity)
  std::size_t bytes = 0;
};

Pool &pool() {
  // Never destroyed: blocks may be released during interpreter exit.
  static Pool *p = [] {
    auto *q = new Pool;
    q->free.reserve(kMaxBlocks + 1);
    return q;
  }();
  return *p;
}

}  // namespace

Block::Block(std::size_t bytes) : bytes_(bytes) {
  const std::size_t want = (bytes + kAlign - 1) / kAlign * kAlign;
  if (want < bytes) throw std::bad_alloc();  // overflow
  {
    // Best fit among pooled blocks no more than twice the request.
    Pool &p = pool();
    std::lock_guard<std::mutex> lock(p.mu);
    std::size_t best = p.free.size();
    for (std::size_t i = 0; i < p.free.size(); ++i) {
      const std::size_t cap = p.free[i].second;
      if (cap >= want && cap / 2 <= want && (best == p.free.size() || cap < p.free[best].second))
        best = i;
    }
    if (best != p.free.size()) {
      ptr_ = p.free[best].first;
      capacity_ = p.free[best].second;
      p.bytes -= capacity_;
      p.free.erase(p.free.begin() + static_cast<std::ptrdiff_t>(best));
      return;
    }
  }
  capacity_ = want == 0 ? kAlign : want;
  ptr_ = std::aligned_alloc(kAlign, capacity_);
  if (ptr_ == nullptr) throw std::bad_alloc();
}

Block::~Block() {
  if (ptr_ != nullptr) release_to_pool(ptr_, capacity_);
}

void release_to_pool(void *ptr, std::size_t capacity) noexcept {
  if (ptr == nullptr) return;
  if (capacity > kMaxPoolBytes) {
    std::free(ptr);
    return;
  }
  Pool &p = pool();
  void *evicted[kMaxBlocks + 1];  // no allocation here: this runs in destructors
  std::size_t n_evicted = 0;
  {
    std::lock_guard<std::mutex> lock(p.mu);
    p.free.emplace_back(ptr, capacity);  // capacity reserved up front: cannot throw
    p.bytes += capacity;
    while (p.free.size() > kMaxBlocks || p.bytes > kMaxPoolBytes) {  // evict the oldest
      evicted[n_evicted++] = p.free.front().first;
      p.bytes -= p.free.front().second;
      p.free.erase(p.free.begin());
    }
  }
  for (std::size_t i = 0; i < n_evicted; ++i) std::free(evicted[i]);
}

std::size_t empty_pool() noexcept {
  Pool &p = pool();
  std::vector<std::pair<void *, std::size_t>> blocks;
  {
    std::lock_guard<std::mutex> lock(p.mu);
    blocks.swap(p.free);
    p.bytes = 0;
  }
  std::size_t n = 0;
  for (auto &b : blocks) {
    n += b.second;
    std::free(b.first);
  }
  return n;
}

std::size_t pool_bytes() noexcept {
  Pool &p = pool();
  std::lock_guard<std::mutex> lock(p.mu);
  return p.bytes;
}

}  // namespace rnncore
