package chatd.peer;

import org.springframework.context.annotation.Configuration;
import org.springframework.messaging.simp.config.ChannelRegistration;
import org.springframework.messaging.simp.config.MessageBrokerRegistry;
import org.springframework.web.socket.config.annotation.EnableWebSocketMessageBroker;
import org.springframework.web.socket.config.annotation.StompEndpointRegistry;
import org.springframework.web.socket.config.annotation.WebSocketMessageBrokerConfigurer;
import org.springframework.web.socket.config.annotation.WebSocketTransportRegistration;

/**
 * The tutorial setup (simple broker on /sub, app prefix /pub, endpoint /ws-stomp), tuned only so
 * the peer is not throttled by defaults: thread pools sized to the cores, larger send buffers,
 * and per-session ordering on (chatd guarantees order, so the peer must too).
 */
@Configuration
@EnableWebSocketMessageBroker
public class WebSocketConfig implements WebSocketMessageBrokerConfigurer {
    private static final int THREADS = Math.max(2, Runtime.getRuntime().availableProcessors() * 2);

    @Override
    public void configureMessageBroker(MessageBrokerRegistry registry) {
        registry.enableSimpleBroker("/sub");
        registry.setApplicationDestinationPrefixes("/pub");
        registry.setPreservePublishOrder(true);
    }

    @Override
    public void registerStompEndpoints(StompEndpointRegistry registry) {
        registry.addEndpoint("/ws-stomp").setAllowedOriginPatterns("*");
        registry.addEndpoint("/ws-stomp").setAllowedOriginPatterns("*").withSockJS();
        // Without this the inbound pool handles one session's SENDs out of order.
        registry.setPreserveReceiveOrder(true);
    }

    @Override
    public void configureClientInboundChannel(ChannelRegistration registration) {
        registration.taskExecutor().corePoolSize(THREADS).maxPoolSize(THREADS);
    }

    @Override
    public void configureClientOutboundChannel(ChannelRegistration registration) {
        registration.taskExecutor().corePoolSize(THREADS).maxPoolSize(THREADS);
    }

    @Override
    public void configureWebSocketTransport(WebSocketTransportRegistration registration) {
        // A fan-out burst to 1000 subscribers must not trip the 512 KiB default buffer limit.
        registration.setSendBufferSizeLimit(8 * 1024 * 1024).setSendTimeLimit(20_000);
        registration.setMessageSizeLimit(64 * 1024);
    }
}
