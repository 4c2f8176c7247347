package chatd.peer;

import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

import org.springframework.http.HttpStatus;
import org.springframework.http.ResponseEntity;
import org.springframework.messaging.handler.annotation.MessageMapping;
import org.springframework.messaging.simp.SimpMessageSendingOperations;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.PathVariable;
import org.springframework.web.bind.annotation.PostMapping;
import org.springframework.web.bind.annotation.RequestParam;
import org.springframework.web.bind.annotation.RestController;

/** Rooms in memory and the chat message route, stamped like chatd (id, ts, seq). */
@RestController
public class ChatController {
    public record Room(String roomId, String name) {}

    public static class ChatMessage {
        public String type;
        public String roomId;
        public String sender;
        public String message;
        public String id;
        public long ts;
        public long seq;
    }

    private final SimpMessageSendingOperations messaging;
    private final Map<String, Room> rooms = new ConcurrentHashMap<>();
    private final Map<String, AtomicLong> seqs = new ConcurrentHashMap<>();
    private final AtomicLong ids = new AtomicLong();

    public ChatController(SimpMessageSendingOperations messaging) {
        this.messaging = messaging;
    }

    @MessageMapping("/chat/message")
    public void message(ChatMessage m) {
        if (m.roomId == null || !rooms.containsKey(m.roomId)) {
            return;
        }
        if ("ENTER".equals(m.type)) {
            m.message = m.sender + "님 등장!";
        }
        m.id = Long.toString(ids.incrementAndGet());
        m.ts = System.currentTimeMillis();
        m.seq = seqs.computeIfAbsent(m.roomId, k -> new AtomicLong()).incrementAndGet();
        messaging.convertAndSend("/sub/chat/room/" + m.roomId, m);
    }

    @GetMapping("/chat/rooms")
    public List<Room> rooms() {
        return new ArrayList<>(rooms.values());
    }

    @PostMapping("/chat/room")
    public Room createRoom(@RequestParam String name) {
        Room r = new Room(UUID.randomUUID().toString(), name);
        rooms.put(r.roomId(), r);
        return r;
    }

    @GetMapping("/chat/room/{roomId}")
    public ResponseEntity<?> room(@PathVariable String roomId) {
        Room r = rooms.get(roomId);
        if (r == null) {
            return ResponseEntity.status(HttpStatus.NOT_FOUND)
                .body(Map.of("status", 404, "error", "no such room"));
        }
        return ResponseEntity.ok(r);
    }
}
