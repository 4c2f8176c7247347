package chatd.interop;

import com.fasterxml.jackson.databind.ObjectMapper;
import java.io.PrintStream;
import java.lang.reflect.Type;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Objects;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.TimeUnit;
import org.springframework.messaging.converter.MappingJackson2MessageConverter;
import org.springframework.messaging.simp.stomp.StompCommand;
import org.springframework.messaging.simp.stomp.StompFrameHandler;
import org.springframework.messaging.simp.stomp.StompHeaders;
import org.springframework.messaging.simp.stomp.StompSession;
import org.springframework.messaging.simp.stomp.StompSessionHandlerAdapter;
import org.springframework.scheduling.concurrent.ThreadPoolTaskScheduler;
import org.springframework.web.socket.client.standard.StandardWebSocketClient;
import org.springframework.web.socket.messaging.WebSocketStompClient;
import org.springframework.web.socket.sockjs.client.RestTemplateXhrTransport;
import org.springframework.web.socket.sockjs.client.SockJsClient;
import org.springframework.web.socket.sockjs.client.WebSocketTransport;

/**
 * Spring's own STOMP client against a running chatd, as a Spring backend would use it.
 *
 * <p>Usage: SpringClients BASE_URL ROOM_ID. Three sessions of WebSocketStompClient: over a plain
 * WebSocket, over SockJS's WebSocket transport and over SockJS's xhr transports only. Each
 * subscribes to the room (with a receipt) and sends two TALK messages (with receipts); each
 * must receive all six in one order with consecutive seqs, and each RECEIPT must name its
 * message's seq. Exits 1 with the reason when a check fails; else prints {"messages": [...]},
 * the room as the first session saw it, for the caller to compare with another client's view.
 */
public final class SpringClients {
  private static final long TIMEOUT_S = 15;
  private static final int PER_SESSION = 2;

  /** One connected session and what reached it. */
  private static final class Probe extends StompSessionHandlerAdapter {
    final String name;
    final List<Map<String, Object>> messages = new CopyOnWriteArrayList<>();
    final List<String> problems = new CopyOnWriteArrayList<>();
    final Map<String, String> receiptSeqs = new ConcurrentHashMap<>();
    final CompletableFuture<StompHeaders> connected = new CompletableFuture<>();
    StompSession session;

    Probe(String name) {
      this.name = name;
    }

    @Override
    public void afterConnected(StompSession s, StompHeaders headers) {
      connected.complete(headers);  // after the connect future: Spring completes that one first
    }

    @Override
    public void handleException(StompSession s, StompCommand command, StompHeaders headers, byte[] payload, Throwable e) {
      problems.add(name + ": " + command + " " + headers + " " + new String(payload, StandardCharsets.UTF_8) + ": " + e);
    }

    @Override
    public void handleTransportError(StompSession s, Throwable e) {
      problems.add(name + ": transport error " + e);
    }

    @Override
    public void handleFrame(StompHeaders headers, Object payload) {
      problems.add(name + ": ERROR frame " + headers + " " + payload);
    }
  }

  public static void main(String[] args) throws Exception {
    if (args.length != 2) fail("usage: SpringClients BASE_URL ROOM_ID");
    final String base = args[0];
    final String room = args[1];
    final String destination = "/sub/chat/room/" + room;

    ThreadPoolTaskScheduler scheduler = new ThreadPoolTaskScheduler();  // heart-beats and receipt timeouts
    scheduler.setPoolSize(2);
    scheduler.setDaemon(true);
    scheduler.initialize();

    List<Probe> probes = List.of(new Probe("websocket"), new Probe("sockjs-websocket"), new Probe("sockjs-xhr"));
    List<WebSocketStompClient> clients = List.of(
        new WebSocketStompClient(new StandardWebSocketClient()),
        new WebSocketStompClient(new SockJsClient(List.of(new WebSocketTransport(new StandardWebSocketClient())))),
        new WebSocketStompClient(new SockJsClient(List.of(new RestTemplateXhrTransport()))));
    List<String> urls = List.of(base.replaceFirst("^http", "ws") + "/ws-stomp", base + "/ws-stomp", base + "/ws-stomp");

    for (int i = 0; i < probes.size(); i++) {
      Probe p = probes.get(i);
      WebSocketStompClient client = clients.get(i);
      client.setMessageConverter(new MappingJackson2MessageConverter());
      client.setTaskScheduler(scheduler);
      client.setReceiptTimeLimit(TimeUnit.SECONDS.toMillis(TIMEOUT_S));
      StompHeaders connected = null;
      try {
        p.session = client.connectAsync(urls.get(i), p).get(TIMEOUT_S, TimeUnit.SECONDS);
        connected = p.connected.get(TIMEOUT_S, TimeUnit.SECONDS);
      } catch (Exception e) {
        fail(p.name + ": could not connect to " + urls.get(i) + ": " + e);
      }
      check("1.2".equals(connected.getFirst("version")), p.name + ": CONNECTED " + connected + ", version 1.2 expected");
      check(connected.getHeartbeat()[0] > 0, p.name + ": the server should offer heart-beats: " + connected);
      p.session.setAutoReceipt(true);
      CompletableFuture<Void> subscribed = new CompletableFuture<>();
      StompSession.Subscription sub = p.session.subscribe(destination, new StompFrameHandler() {
        @Override
        public Type getPayloadType(StompHeaders headers) {
          return Map.class;
        }

        @Override
        @SuppressWarnings("unchecked")
        public void handleFrame(StompHeaders headers, Object payload) {
          p.messages.add((Map<String, Object>) payload);
        }
      });
      sub.addReceiptTask(() -> subscribed.complete(null));
      sub.addReceiptLostTask(() -> subscribed.completeExceptionally(new IllegalStateException("no RECEIPT")));
      try {
        subscribed.get(TIMEOUT_S + 1, TimeUnit.SECONDS);
      } catch (Exception e) {
        fail(p.name + ": SUBSCRIBE " + destination + " not confirmed: " + e);
      }
    }

    List<String> texts = new ArrayList<>();
    List<CompletableFuture<Void>> receipts = new ArrayList<>();
    for (Probe p : probes) {
      for (int n = 0; n < PER_SESSION; n++) {
        String text = p.name + " " + n + ": 짬뽕? 🍜 a:b \\ \"q\"";
        texts.add(text);
        StompHeaders headers = new StompHeaders();
        headers.setDestination("/pub/chat/message");
        CompletableFuture<Void> done = new CompletableFuture<>();
        StompSession.Receiptable r = p.session.send(headers,
            Map.of("type", "TALK", "roomId", room, "sender", "spring-" + p.name, "message", text));
        r.addReceiptTask((StompHeaders rh) -> {
          p.receiptSeqs.put(text, Objects.toString(rh.getFirst("x-seq")));
          done.complete(null);
        });
        r.addReceiptLostTask(() -> done.completeExceptionally(new IllegalStateException("no RECEIPT")));
        receipts.add(done);
      }
    }
    try {
      CompletableFuture.allOf(receipts.toArray(CompletableFuture[]::new)).get(TIMEOUT_S + 1, TimeUnit.SECONDS);
    } catch (Exception e) {
      fail("RECEIPTs for the SENDs: " + e);
    }

    long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(TIMEOUT_S);
    for (Probe p : probes) {
      while (p.messages.size() < texts.size() && System.nanoTime() < deadline) Thread.sleep(20);
      check(p.messages.size() == texts.size(), p.name + ": got " + p.messages.size() + " of " + texts.size() + ": " + p.messages);
      List<Object> seqs = p.messages.stream().map(m -> m.get("seq")).toList();
      check(seqs.equals(List.of(1, 2, 3, 4, 5, 6)), p.name + ": seqs in delivery order " + seqs);
      check(p.messages.stream().allMatch(m -> room.equals(m.get("roomId"))), p.name + ": another room in " + p.messages);
      check(p.messages.stream().map(m -> m.get("message")).sorted().toList().equals(texts.stream().sorted().toList()),
          p.name + ": texts " + p.messages);
      check(p.messages.equals(probes.get(0).messages), p.name + " and " + probes.get(0).name + " saw different rooms");
      for (Probe sender : probes) {
        List<Object> mine = p.messages.stream().filter(m -> ("spring-" + sender.name).equals(m.get("sender")))
            .map(m -> m.get("message")).toList();
        check(mine.size() == PER_SESSION && ((String) mine.get(0)).startsWith(sender.name + " 0"),
            p.name + ": " + sender.name + "'s messages out of order: " + mine);
      }
    }
    for (Map<String, Object> m : probes.get(0).messages) {
      String text = (String) m.get("message");
      String seq = probes.stream().map(p -> p.receiptSeqs.get(text)).filter(Objects::nonNull).findFirst().orElse(null);
      check(String.valueOf(m.get("seq")).equals(seq), "RECEIPT for \"" + text + "\" has x-seq " + seq + ", the message " + m);
    }
    for (Probe p : probes) {
      check(p.problems.isEmpty(), p.name + ": " + p.problems);
      p.session.disconnect();
    }
    for (WebSocketStompClient c : clients) c.stop();

    PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
    out.println(new ObjectMapper().writeValueAsString(Map.of("messages", probes.get(0).messages)));
    System.exit(0);  // the clients' non-daemon threads would keep the JVM up
  }

  private static void check(boolean ok, String why) {
    if (!ok) fail(why);
  }

  private static void fail(String why) {
    System.err.println("SpringClients: " + why);
    System.exit(1);
  }
}
