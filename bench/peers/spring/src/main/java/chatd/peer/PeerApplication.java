package chatd.peer;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;

/** The Spring STOMP chat server chatd is benchmarked against (bench/run.sh starts it). */
@SpringBootApplication
public class PeerApplication {
    public static void main(String[] args) {
        SpringApplication.run(PeerApplication.class, args);
    }
}
