#include "socket_operations.h"

#include <algorithm>

namespace twinloop {

namespace {

int32_t clamp_count(size_t bytes) { return static_cast<int32_t>(std::min<size_t>(bytes, INT32_MAX)); }

template <typename Queue>
void erase_at(Queue& queue, size_t index) {
  queue.erase(queue.begin() + static_cast<std::ptrdiff_t>(index));
}

}  // namespace

int SocketOperations::set_streaming(Stream stream, bool on) {
  if ((stream == Stream::kAccept) != listener) return kEINVAL;
  if (stream == Stream::kAccept) {
    streaming_accept = on;
    return 0;
  }
  if (on) {
    if (!reads.empty()) return kEBUSY;  // the stream would take bytes the queued reads wait for
    streamed = true;
  }
  streaming_read = on;
  return 0;
}

CancelOutcome SocketOperations::cancel(HandleId handle, int32_t op_id, EventOutbox& out) {
  if (connect_op >= 0 && connect_op == op_id) {
    if (connect_held) return CancelOutcome::kRecallConnect;
    connect_op = -1;
    out.post({handle, EventKind::kCompleted, kECANCELED, op_id});
    return CancelOutcome::kSettled;
  }
  for (size_t i = 0; i < reads.size(); ++i) {
    if (reads[i].op_id != op_id) continue;
    if (i < reads_held) {
      reads[i].cancelled = true;
      return CancelOutcome::kRecallRead;
    }
    erase_at(reads, i);
    out.post({handle, EventKind::kCompleted, kECANCELED, op_id});
    return CancelOutcome::kSettled;
  }
  if (QueuedAccept* accept = accepts.find(op_id)) {
    // The kernel's accepts belong to no accept() in particular: if the others queued can take
    // every one it holds, this one just leaves; else what the kernel holds is recalled, and this
    // one ends with what comes back, so that a connection taken meanwhile is not lost.
    if (accepts.size() > accepts_held) {
      accepts.erase(accept);
      out.post({handle, EventKind::kCompleted, kECANCELED, op_id});
      return CancelOutcome::kSettled;
    }
    accept->cancelled = true;
    return CancelOutcome::kRecallAccept;
  }
  for (size_t i = 0; i < writes.size(); ++i) {
    if (writes[i].op_id != op_id) continue;
    if (i < writes_held) {
      // Withdrawn, kept or torn once the kernel says how much of it went out.
      writes[i].cancelled = true;
      return CancelOutcome::kRecallWrite;
    }
    if (writes[i].sent > 0) {
      tear_writes(handle, i, out);
    } else {
      erase_at(writes, i);
      out.post({handle, EventKind::kCompleted, kECANCELED, op_id});
    }
    return CancelOutcome::kSettled;
  }
  return CancelOutcome::kNotFound;
}

bool SocketOperations::withdraw_unheld(HandleId handle, EventOutbox& out) {
  auto withdraw = [&](auto& queue, size_t held) {
    for (size_t i = held; i < queue.size(); ++i) out.post({handle, EventKind::kCompleted, kECANCELED, queue[i].op_id});
    queue.resize(std::min(held, queue.size()));
  };
  withdraw(reads, reads_held);
  withdraw(writes, writes_held);
  size_t kept = 0;
  accepts.erase_if([&](const QueuedAccept& accept) {
    if (kept < accepts_held) {
      ++kept;
      return false;
    }
    out.post({handle, EventKind::kCompleted, kECANCELED, accept.op_id});
    return true;
  });
  if (connect_op >= 0 && !connect_held) {
    out.post({handle, EventKind::kCompleted, kECANCELED, connect_op});
    connect_op = -1;
  }
  return reads_held > 0 || writes_held > 0 || accepts_held > 0 || connect_held;
}

void SocketOperations::account_sent(HandleId handle, size_t carried, size_t bytes, EventOutbox& out) {
  carried = std::min(carried, writes.size());
  size_t done = 0;
  for (; done < carried; ++done) {
    QueuedWrite& write = writes[done];
    size_t take = std::min(bytes, write.rest.size());
    write.rest = write.rest.subspan(take);
    write.sent += take;
    bytes -= take;
    if (!write.rest.empty()) break;  // short send: the rest goes first in the next one
    out.post({handle, EventKind::kCompleted, 0, write.op_id});
  }
  writes.erase(writes.begin(), writes.begin() + static_cast<std::ptrdiff_t>(done));
}

void SocketOperations::fail_writes(HandleId handle, int32_t error, EventOutbox& out) {
  for (const QueuedWrite& write : writes) out.post({handle, EventKind::kCompleted, error, write.op_id});
  writes.clear();
}

void SocketOperations::fail_head_write(HandleId handle, int32_t error, EventOutbox& out) {
  if (writes.front().sent > 0) {
    write_torn = true;
    return fail_writes(handle, error, out);
  }
  out.post({handle, EventKind::kCompleted, error, writes.front().op_id});
  writes.erase(writes.begin());
}

void SocketOperations::settle_cancelled_writes(HandleId handle, EventOutbox& out) {
  for (size_t i = 0; i < writes.size();) {
    if (!writes[i].cancelled) {
      ++i;
    } else if (writes[i].sent == 0) {
      out.post({handle, EventKind::kCompleted, kECANCELED, writes[i].op_id});
      erase_at(writes, i);
    } else {
      return tear_writes(handle, i, out);
    }
  }
}

void SocketOperations::tear_writes(HandleId handle, size_t index, EventOutbox& out) {
  out.post({handle, EventKind::kCompleted, clamp_count(writes[index].sent), writes[index].op_id});
  for (size_t i = index + 1; i < writes.size(); ++i) out.post({handle, EventKind::kCompleted, kECANCELED, writes[i].op_id});
  writes.resize(index);
  write_torn = true;
}

void SocketOperations::fail_reads(HandleId handle, int32_t error, EventOutbox& out) {
  for (const QueuedRead& read : reads) out.post({handle, EventKind::kCompleted, error, read.op_id});
  reads.clear();
  accepts.erase_if([&](const QueuedAccept& accept) {
    out.post({handle, EventKind::kCompleted, error, accept.op_id});
    return true;
  });
}

void SocketOperations::complete_read(HandleId handle, int32_t result, EventOutbox& out) {
  if (reads.empty()) return;
  int32_t op_id = reads.front().op_id;
  reads.erase(reads.begin());
  out.post({handle, EventKind::kCompleted, result, op_id});
}

int32_t SocketOperations::take_accept(bool cancelled_result) {
  // A scan from the oldest that stops at once unless the kernel holds cancelled ones, of which
  // there are never more than it holds.
  QueuedAccept* taker = accepts.first_where([&](const QueuedAccept& accept) { return accept.cancelled == cancelled_result; });
  if (taker == nullptr && !cancelled_result) taker = accepts.front();
  if (taker == nullptr) return -1;
  int32_t op_id = taker->op_id;
  accepts.erase(taker);
  return op_id;
}

void SocketOperations::settle_cancelled_accepts(HandleId handle, EventOutbox& out) {
  accepts.erase_if([&](const QueuedAccept& accept) {
    if (accept.cancelled) out.post({handle, EventKind::kCompleted, kECANCELED, accept.op_id});
    return accept.cancelled;
  });
}

}  // namespace twinloop
