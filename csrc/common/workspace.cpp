#include "common/workspace.h"

#include <cstdlib>
#include <new>

namespace rnncore {

namespace {

constexpr std::size_t kAlign = 64;

// The calling thread's stack of current pools (innermost last).
std::vector<std::shared_ptr<BlockPool>> &pool_stack() {
  thread_local std::vector<std::shared_ptr<BlockPool>> stack;
  return stack;
}

}  // namespace

BlockPool::BlockPool(std::size_t max_blocks, std::size_t max_bytes)
    : max_blocks_(max_blocks), max_bytes_(max_bytes) {
  free_.reserve(max_blocks + 1);  // give() never allocates: it runs in destructors
}

BlockPool::~BlockPool() {
  clear();
}

std::pair<void *, std::size_t> BlockPool::take(std::size_t want) {
  std::lock_guard<std::mutex> lock(mu_);
  std::size_t best = free_.size();
  for (std::size_t i = 0; i < free_.size(); ++i) {
    const std::size_t cap = free_[i].second;
    if (cap >= want && cap / 2 <= want && (best == free_.size() || cap < free_[best].second))
      best = i;
  }
  if (best == free_.size()) {
    ++fresh_;  // the caller allocates
    return {nullptr, 0};
  }
  const auto found = free_[best];
  bytes_ -= found.second;
  free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(best));
  ++reused_;
  return found;
}

void BlockPool::give(void *ptr, std::size_t capacity) noexcept {
  if (ptr == nullptr) return;
  if (capacity > max_bytes_ || max_blocks_ == 0) {
    std::free(ptr);
    return;
  }
  std::lock_guard<std::mutex> lock(mu_);
  free_.emplace_back(ptr, capacity);  // capacity reserved up front: cannot throw
  bytes_ += capacity;
  while (free_.size() > max_blocks_ || bytes_ > max_bytes_) {  // the oldest go first
    std::free(free_.front().first);
    bytes_ -= free_.front().second;
    free_.erase(free_.begin());
  }
}

std::size_t BlockPool::clear() noexcept {
  std::lock_guard<std::mutex> lock(mu_);
  std::size_t n = 0;
  for (const auto &b : free_) {
    n += b.second;
    std::free(b.first);
  }
  free_.clear();  // keeps the reserved capacity
  bytes_ = 0;
  return n;
}

BlockPool::Stats BlockPool::stats() const {
  std::lock_guard<std::mutex> lock(mu_);
  return {bytes_, free_.size(), reused_, fresh_};
}

std::shared_ptr<BlockPool> current_pool() {
  const auto &s = pool_stack();
  return s.empty() ? nullptr : s.back();
}

void push_pool(std::shared_ptr<BlockPool> p) {
  pool_stack().push_back(std::move(p));
}

bool pop_pool(const BlockPool *p) {
  auto &s = pool_stack();
  if (s.empty() || s.back().get() != p) return false;
  s.pop_back();
  return true;
}

void release_block(Detached &d) noexcept {
  if (d.ptr == nullptr) return;
  if (d.pool)
    d.pool->give(d.ptr, d.capacity);
  else
    std::free(d.ptr);
  d.ptr = nullptr;
  d.capacity = 0;
  d.pool.reset();
}

Block::Block(std::size_t bytes) : bytes_(bytes) {
  const std::size_t want = (bytes + kAlign - 1) / kAlign * kAlign;
  if (want < bytes) throw std::bad_alloc();  // overflow
  mem_.pool = current_pool();
  if (mem_.pool) {
    const auto [ptr, cap] = mem_.pool->take(want == 0 ? kAlign : want);
    if (ptr != nullptr) {
      mem_.ptr = ptr;
      mem_.capacity = cap;
      return;
    }
  }
  mem_.capacity = want == 0 ? kAlign : want;
  mem_.ptr = std::aligned_alloc(kAlign, mem_.capacity);
  if (mem_.ptr == nullptr) throw std::bad_alloc();
}

}  // namespace rnncore
