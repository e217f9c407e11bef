// A cache of large host buffers for XLA:CPU (see cropjax/host_buffers.py).
//
// XLA:CPU allocates each execution's temporaries as one block with
// posix_memalign and frees it at the end of the execution. glibc serves blocks
// of that size with a fresh mmap and returns them with munmap, so every step of
// a ResNet faults its whole working set in again, 4 KiB at a time (1.3 GB and
// about a third of the step for ResNet-50 at batch 16 on 2 cores).
//
// CropjaxHostBuffersInstall() points the posix_memalign and free entries of
// libjax_common.so's procedure linkage table at the two functions below.
// Blocks of at least kMinBytes that XLA frees are kept (still allocated, with
// their pages mapped) and handed back for the next request they fit;
// everything else goes straight to glibc. Every cached block is a live glibc
// allocation, so a block freed or reallocated through any other path is still
// valid.

#include <elf.h>
#include <link.h>
#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

namespace {

constexpr size_t kMinBytes = size_t{16} << 20;  // smaller blocks: glibc's bins serve them well
constexpr size_t kMaxBlocks = 8;

struct Block {
  void* ptr;
  size_t usable;
};

std::mutex mu;
std::vector<Block>* const cache = new std::vector<Block>();  // under mu; never freed
size_t cached_bytes = 0;              // under mu
size_t limit_bytes = 0;               // under mu; nothing is cached before the install
size_t hits = 0, misses = 0;          // under mu

// Takes the smallest cached block that holds `size` bytes at `align` without
// wasting more than a quarter of it; nullptr if none.
void* Take(size_t size, size_t align) {
  std::lock_guard<std::mutex> lock(mu);
  size_t best = cache->size();
  for (size_t i = 0; i < cache->size(); ++i) {
    const Block& b = (*cache)[i];
    if (b.usable < size || b.usable - size > b.usable / 4) continue;
    if (reinterpret_cast<uintptr_t>(b.ptr) % align != 0) continue;
    if (best == cache->size() || b.usable < (*cache)[best].usable) best = i;
  }
  if (best == cache->size()) {
    ++misses;
    return nullptr;
  }
  ++hits;
  void* ptr = (*cache)[best].ptr;
  cached_bytes -= (*cache)[best].usable;
  cache->erase(cache->begin() + best);
  return ptr;
}

int CachedPosixMemalign(void** out, size_t align, size_t size) {
  if (size >= kMinBytes) {
    if (void* ptr = Take(size, align)) {
      *out = ptr;
      return 0;
    }
  }
  return posix_memalign(out, align, size);
}

void CachedFree(void* ptr) {
  if (ptr == nullptr) return;
  const size_t usable = malloc_usable_size(ptr);
  if (usable >= kMinBytes) {
    std::vector<void*> evicted;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (usable <= limit_bytes) {
        // Make room: the oldest blocks go back to glibc first.
        while (!cache->empty() &&
               (cache->size() >= kMaxBlocks || cached_bytes + usable > limit_bytes)) {
          evicted.push_back(cache->front().ptr);
          cached_bytes -= cache->front().usable;
          cache->erase(cache->begin());
        }
        cache->push_back({ptr, usable});
        cached_bytes += usable;
        ptr = nullptr;
      }
    }
    for (void* p : evicted) free(p);
  }
  free(ptr);
}

#if defined(__x86_64__)
constexpr unsigned kJumpSlot = R_X86_64_JUMP_SLOT;
#elif defined(__aarch64__)
constexpr unsigned kJumpSlot = R_AARCH64_JUMP_SLOT;
#else
#error "host_buffers.cc knows the PLT relocations of x86-64 and AArch64 only"
#endif

struct Patch {
  const char* name;
  void* replacement;
};

// Rewrites the PLT slots of one loaded object; returns how many were patched.
int PatchObject(const dl_phdr_info* info, const Patch* patches, int n) {
  const ElfW(Addr) base = info->dlpi_addr;
  const ElfW(Dyn)* dyn = nullptr;
  ElfW(Addr) relro_begin = 0, relro_end = 0;
  for (int i = 0; i < info->dlpi_phnum; ++i) {
    const ElfW(Phdr)& ph = info->dlpi_phdr[i];
    if (ph.p_type == PT_DYNAMIC) dyn = reinterpret_cast<const ElfW(Dyn)*>(base + ph.p_vaddr);
    if (ph.p_type == PT_GNU_RELRO) {
      relro_begin = base + ph.p_vaddr;
      relro_end = relro_begin + ph.p_memsz;
    }
  }
  if (dyn == nullptr) return 0;
  ElfW(Addr) jmprel = 0, symtab = 0, strtab = 0;
  size_t pltrelsz = 0;
  for (const ElfW(Dyn)* d = dyn; d->d_tag != DT_NULL; ++d) {
    switch (d->d_tag) {
      case DT_JMPREL: jmprel = d->d_un.d_ptr; break;
      case DT_PLTRELSZ: pltrelsz = d->d_un.d_val; break;
      case DT_SYMTAB: symtab = d->d_un.d_ptr; break;
      case DT_STRTAB: strtab = d->d_un.d_ptr; break;
    }
  }
  if (!jmprel || !symtab || !strtab) return 0;
  // glibc relocates these entries in place on x86-64; other loaders may not.
  auto absolute = [base](ElfW(Addr) a) { return a < base ? a + base : a; };
  const auto* rela = reinterpret_cast<const ElfW(Rela)*>(absolute(jmprel));
  const auto* syms = reinterpret_cast<const ElfW(Sym)*>(absolute(symtab));
  const char* strs = reinterpret_cast<const char*>(absolute(strtab));
  const long page = sysconf(_SC_PAGESIZE);
  int patched = 0;
  for (size_t i = 0; i < pltrelsz / sizeof(ElfW(Rela)); ++i) {
    if (ELF64_R_TYPE(rela[i].r_info) != kJumpSlot) continue;
    const char* name = strs + syms[ELF64_R_SYM(rela[i].r_info)].st_name;
    for (int p = 0; p < n; ++p) {
      if (std::strcmp(name, patches[p].name) != 0) continue;
      const ElfW(Addr) at = base + rela[i].r_offset;
      auto* slot = reinterpret_cast<void**>(at);
      // Under full RELRO the table is read-only: open its page for the write, then close it.
      const bool relro = at >= relro_begin && at < relro_end;
      void* first = reinterpret_cast<void*>(at & ~static_cast<ElfW(Addr)>(page - 1));
      if (relro && mprotect(first, page, PROT_READ | PROT_WRITE) != 0) return -1;
      __atomic_store_n(slot, patches[p].replacement, __ATOMIC_SEQ_CST);
      if (relro) mprotect(first, page, PROT_READ);
      ++patched;
    }
  }
  return patched;
}

struct Search {
  const char* suffix;
  int patched;
};

}  // namespace

extern "C" {

// Patches every loaded object whose path ends in `suffix` (e.g.
// "/libjax_common.so"). Returns the number of slots patched (2 for one
// library), 0 if no such object or no such slots, -1 if a page could not be
// made writable. `limit` caps the bytes kept in the cache.
__attribute__((visibility("default"))) int CropjaxHostBuffersInstall(const char* suffix,
                                                                     size_t limit) {
  {
    std::lock_guard<std::mutex> lock(mu);
    limit_bytes = limit;
  }
  Search search{suffix, 0};
  dl_iterate_phdr(
      [](dl_phdr_info* info, size_t, void* data) -> int {
        auto* s = static_cast<Search*>(data);
        const size_t n = std::strlen(info->dlpi_name), m = std::strlen(s->suffix);
        if (n < m || std::strcmp(info->dlpi_name + n - m, s->suffix) != 0) return 0;
        static const Patch patches[] = {
            {"posix_memalign", reinterpret_cast<void*>(&CachedPosixMemalign)},
            {"free", reinterpret_cast<void*>(&CachedFree)},
        };
        const int r = PatchObject(info, patches, 2);
        if (r < 0) s->patched = -1;
        else if (s->patched >= 0) s->patched += r;
        return 0;
      },
      &search);
  return search.patched;
}

// Returns every cached block to glibc.
__attribute__((visibility("default"))) void CropjaxHostBuffersRelease() {
  std::vector<Block> blocks;
  {
    std::lock_guard<std::mutex> lock(mu);
    blocks.swap(*cache);
    cached_bytes = 0;
  }
  for (const Block& b : blocks) free(b.ptr);
}

// The two hooks, for tests.
__attribute__((visibility("default"))) void* CropjaxHostBuffersAllocate(size_t size, size_t align) {
  void* ptr = nullptr;
  return CachedPosixMemalign(&ptr, align, size) == 0 ? ptr : nullptr;
}

__attribute__((visibility("default"))) void CropjaxHostBuffersFree(void* ptr) { CachedFree(ptr); }

// Writes {cached blocks, cached bytes, hits, misses} to out[0..3].
__attribute__((visibility("default"))) void CropjaxHostBuffersStats(size_t* out) {
  std::lock_guard<std::mutex> lock(mu);
  out[0] = cache->size();
  out[1] = cached_bytes;
  out[2] = hits;
  out[3] = misses;
}

}  // extern "C"
