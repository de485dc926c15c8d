/*
 * CityWatch's logins and topic rights for Apache ActiveMQ Artemis, from the same four files
 * the registry writes for Mosquitto (services/registry/mosquitto.py): each acceptor's
 * password file (`user:$7$iterations$salt$PBKDF2-HMAC-SHA512`, as mosquitto_passwd writes
 * it) and ACL file (`user`, `topic read|write|readwrite`, `pattern read|write|readwrite`).
 *
 * - An acceptor's `securityDomain` (devices or services) names which pair of files its
 *   logins are checked against, so a device never logs in on the services acceptor and a
 *   service account never on the device acceptor.
 * - On the device acceptor the MQTT client id must be the username (Mosquitto's
 *   `use_username_as_clientid` replaces it; Artemis has no such setting, so a CONNECT with
 *   another id is refused): no device can take over another client's session.
 * - Rights are checked on the MQTT topic the Artemis address stands for, with Mosquitto's
 *   meaning: `write` is SEND, `read` is subscribing and receiving. Whatever is not granted
 *   is refused (management included).
 * - The files are read again when one of them changes (mtime or size), at the next login:
 *   `citywatch devices provision` takes effect without a restart or a signal.
 * - A password is checked with PBKDF2 once per file version: Artemis authenticates again at
 *   every authorisation it has not cached (each address a login publishes to, again every
 *   `security-invalidation-interval`), on the connection's own thread, and with its own
 *   authentication cache off (broker.xml says why) each of those was a PBKDF2 run in the
 *   publish path. A password that passed is remembered as a salted SHA-256 in the file
 *   version's rules, which belong to one acceptor and are dropped when a file changes.
 *
 * Compiled by `citywatch stack up` (services/stack/artemis.py) against the broker's jars.
 */
package org.citywatch.artemis;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.MessageDigest;
import java.security.NoSuchAlgorithmException;
import java.security.Principal;
import java.security.SecureRandom;
import java.util.ArrayList;
import java.util.Base64;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;
import java.util.logging.Logger;
import javax.crypto.SecretKeyFactory;
import javax.crypto.spec.PBEKeySpec;
import javax.security.auth.Subject;

import org.apache.activemq.artemis.core.protocol.mqtt.MQTTUtil;
import org.apache.activemq.artemis.core.security.CheckType;
import org.apache.activemq.artemis.core.security.Role;
import org.apache.activemq.artemis.spi.core.protocol.RemotingConnection;
import org.apache.activemq.artemis.spi.core.security.ActiveMQSecurityManager5;
import org.apache.activemq.artemis.spi.core.security.jaas.RolePrincipal;
import org.apache.activemq.artemis.spi.core.security.jaas.UserPrincipal;

public class RegistrySecurityManager implements ActiveMQSecurityManager5 {

   private static final Logger LOG = Logger.getLogger(RegistrySecurityManager.class.getName());
   static final String DEVICES = "devices";

   private final Map<String, Listener> listeners = new HashMap<>();

   @Override
   public RegistrySecurityManager init(Map<String, String> properties) {
      for (String domain : List.of(DEVICES, "services")) {
         listeners.put(domain, new Listener(
            Path.of(properties.get(domain + ".passwd")), Path.of(properties.get(domain + ".acl"))));
      }
      return this;
   }

   @Override
   public Subject authenticate(String user, String password, RemotingConnection connection,
                               String securityDomain) {
      Listener listener = listeners.get(securityDomain);
      if (user == null || password == null || listener == null) {
         return null;
      }
      if (DEVICES.equals(securityDomain) && (connection == null || !user.equals(connection.getClientID()))) {
         LOG.warning("refused " + user + ": its client id " + (connection == null ? null : connection.getClientID())
                        + " is not its username");
         return null;
      }
      if (!listener.current().checkPassword(user, password)) {
         return null;
      }
      Subject subject = new Subject();
      subject.getPrincipals().add(new UserPrincipal(user));
      subject.getPrincipals().add(new RolePrincipal(securityDomain));
      return subject;
   }

   @Override
   public boolean authorize(Subject subject, Set<Role> roles, CheckType checkType, String address) {
      if (subject == null) {
         return false;
      }
      String user = null;
      Listener listener = null;
      for (Principal p : subject.getPrincipals()) {
         if (p instanceof UserPrincipal) {
            user = p.getName();
         } else if (p instanceof RolePrincipal) {
            listener = listeners.get(p.getName());
         }
      }
      if (user == null || listener == null) {
         return false;
      }
      String need = switch (checkType) {
         case SEND -> "write";
         case CONSUME, BROWSE, CREATE_DURABLE_QUEUE, DELETE_DURABLE_QUEUE,
              CREATE_NON_DURABLE_QUEUE, DELETE_NON_DURABLE_QUEUE -> "read";
         case CREATE_ADDRESS -> "any";  // publishing or subscribing creates the address
         default -> null;  // MANAGE, EDIT, VIEW, DELETE_ADDRESS: nobody
      };
      if (need == null) {
         return false;
      }
      int fqqn = address.indexOf("::");
      String bare = fqqn < 0 ? address : address.substring(0, fqqn);
      // broker.xml makes addresses MQTT topics as they are; retained messages live under
      // a prefix that this strips.
      String topic = MQTTUtil.getMqttTopicFromCoreAddress(bare, MQTTUtil.MQTT_WILDCARD);
      return listener.current().allows(user, need, topic);
   }

   @Override
   public boolean validateUser(String user, String password) {
      return false;  // only the ActiveMQSecurityManager5 methods above are used
   }

   @Override
   public boolean validateUserAndRole(String user, String password, Set<Role> roles, CheckType checkType) {
      return false;
   }

   /** One acceptor's password and ACL files, parsed again when either changes. */
   static final class Listener {
      private final Path passwd;
      private final Path acl;
      private String stamp = "";
      private Rules rules = new Rules(Map.of(), Map.of(), List.of());

      Listener(Path passwd, Path acl) {
         this.passwd = passwd;
         this.acl = acl;
      }

      synchronized Rules current() {
         try {
            String now = stamp(passwd) + "/" + stamp(acl);
            if (!now.equals(stamp)) {
               rules = Rules.parse(Files.readAllLines(passwd), Files.readAllLines(acl));
               stamp = now;
            }
         } catch (IOException e) {
            LOG.warning("cannot read " + passwd + " or " + acl + ": " + e + "; keeping the last ones read");
         }
         return rules;
      }

      private static String stamp(Path p) throws IOException {
         return Files.getLastModifiedTime(p).toMillis() + ":" + Files.size(p) + ":"
            + Files.readAttributes(p, "unix:ino").get("ino");
      }
   }

   /** Rights as Mosquitto reads them: `user` sections of `topic` lines, and `pattern`
    * lines (without %u/%c here) for every user of the file. */
   record Rules(Map<String, String> hashes, Map<String, List<String[]>> topics, List<String[]> patterns,
                Map<String, byte[]> passed) {

      /** Salts the digests of passwords that passed, so the map holds nothing reusable. */
      private static final byte[] PEPPER = new byte[16];

      static {
         new SecureRandom().nextBytes(PEPPER);
      }

      Rules(Map<String, String> hashes, Map<String, List<String[]>> topics, List<String[]> patterns) {
         this(hashes, topics, patterns, new ConcurrentHashMap<>());
      }

      static Rules parse(List<String> passwdLines, List<String> aclLines) {
         Map<String, String> hashes = new HashMap<>();
         for (String line : passwdLines) {
            int colon = line.indexOf(':');
            if (!line.startsWith("#") && colon > 0) {
               hashes.put(line.substring(0, colon), line.substring(colon + 1).strip());
            }
         }
         Map<String, List<String[]>> topics = new HashMap<>();
         List<String[]> patterns = new ArrayList<>();
         String user = null;
         for (String raw : aclLines) {
            String[] w = raw.strip().split("\\s+");
            if (w.length == 2 && w[0].equals("user")) {
               user = w[1];
            } else if (w.length == 3 && w[0].equals("topic") && user != null) {
               topics.computeIfAbsent(user, u -> new ArrayList<>()).add(new String[] {w[1], w[2]});
            } else if (w.length == 3 && w[0].equals("pattern")) {
               patterns.add(new String[] {w[1], w[2]});
            }
         }
         return new Rules(hashes, topics, patterns);
      }

      boolean checkPassword(String user, String password) {
         String hashed = hashes.get(user);
         if (hashed == null) {
            return false;
         }
         byte[] digest = digest(password);
         byte[] known = passed.get(user);
         if (known != null && MessageDigest.isEqual(known, digest)) {
            return true;
         }
         if (!pbkdf2Matches(hashed, password)) {
            return false;
         }
         passed.put(user, digest);
         return true;
      }

      private static byte[] digest(String password) {
         try {
            MessageDigest sha = MessageDigest.getInstance("SHA-256");
            sha.update(PEPPER);
            return sha.digest(password.getBytes(StandardCharsets.UTF_8));
         } catch (NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
         }
      }

      private static boolean pbkdf2Matches(String hashed, String password) {
         String[] parts = hashed.split("\\$");  // "", "7", iterations, salt, digest
         if (parts.length != 5 || !parts[1].equals("7")) {
            return false;
         }
         try {
            byte[] salt = Base64.getDecoder().decode(parts[3]);
            byte[] expected = Base64.getDecoder().decode(parts[4]);
            PBEKeySpec spec = new PBEKeySpec(password.toCharArray(), salt, Integer.parseInt(parts[2]),
                                             expected.length * 8);
            byte[] got = SecretKeyFactory.getInstance("PBKDF2WithHmacSHA512").generateSecret(spec).getEncoded();
            return MessageDigest.isEqual(got, expected);  // SunJCE encodes the password as UTF-8
         } catch (Exception e) {
            return false;
         }
      }

      boolean allows(String user, String need, String topic) {
         List<String[]> granted = new ArrayList<>(patterns);
         granted.addAll(topics.getOrDefault(user, List.of()));
         for (String[] rule : granted) {
            boolean access = need.equals("any") || rule[0].equals("readwrite") || rule[0].equals(need);
            if (access && covers(rule[1], topic)) {
               return true;
            }
         }
         return false;
      }

      /** True if the ACL filter covers `topic`, itself a topic or a subscription's filter
       * (whose `+` and `#` must then be matched by the ACL's own). */
      static boolean covers(String filter, String topic) {
         String[] f = filter.split("/", -1);
         String[] t = topic.split("/", -1);
         for (int i = 0; i < f.length; i++) {
            if (f[i].equals("#")) {
               return i <= t.length;
            }
            if (i >= t.length) {
               return false;
            }
            if (f[i].equals("+")) {
               if (t[i].equals("#")) {
                  return false;
               }
               continue;
            }
            if (!f[i].equals(t[i])) {
               return false;
            }
         }
         return f.length == t.length;
      }
   }
}
