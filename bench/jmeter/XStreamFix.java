import java.io.File;
import java.lang.instrument.Instrumentation;
import java.lang.reflect.Field;
import java.lang.reflect.Method;

/**
 * Java agent that lets Debian's JMeter 2.13 load .jmx plans with XStream >= 1.4.18.
 *
 * XStream's security framework refuses every type not explicitly allowed and JMeter 2.13 never allows its own
 * classes, so loading any plan fails with ForbiddenClassException. Before JMeter's main runs, this agent takes
 * JMeter's class loader (NewDriver.loader), loads jmeter.properties (SaveService's static initializer reads it)
 * and allows org.apache.jmeter.** and org.apache.jorphan.** on SaveService's two XStream instances.
 *
 * Usage: JAVA_ARGS="-javaagent:xstream-fix.jar[=JMETER_HOME]" jmeter -n -t plan.jmx ...
 * Failures are reported on stderr and never stop JMeter (a JMeter that needs no fix keeps working).
 */
public final class XStreamFix {
    private static final String[] ALLOWED = {"org.apache.jmeter.**", "org.apache.jorphan.**"};

    private XStreamFix() {
    }

    public static void premain(String args, Instrumentation inst) {
        Thread thread = Thread.currentThread();
        ClassLoader previous = thread.getContextClassLoader();
        try {
            Class<?> driver = Class.forName("org.apache.jmeter.NewDriver");
            ClassLoader loader = (ClassLoader) staticField(driver, "loader");
            thread.setContextClassLoader(loader);
            boolean given = args != null && !args.isEmpty();
            String home = given ? args : (String) driver.getMethod("getJMeterDir").invoke(null);
            Class<?> utils = Class.forName("org.apache.jmeter.util.JMeterUtils", true, loader);
            utils.getMethod("setJMeterHome", String.class).invoke(null, home);
            String props = home + File.separator + "bin" + File.separator + "jmeter.properties";
            utils.getMethod("loadJMeterProperties", String.class).invoke(null, props);
            Class<?> save = Class.forName("org.apache.jmeter.save.SaveService", true, loader);
            allow(staticField(save, "JMXSAVER"));
            allow(staticField(save, "JTLSAVER"));
        } catch (Throwable e) {
            System.err.println("XStreamFix: not applied: " + e);
        } finally {
            thread.setContextClassLoader(previous);
        }
    }

    private static Object staticField(Class<?> owner, String name) throws ReflectiveOperationException {
        Field field = owner.getDeclaredField(name);
        field.setAccessible(true);
        return field.get(null);
    }

    private static void allow(Object xstream) throws ReflectiveOperationException {
        Method method = xstream.getClass().getMethod("allowTypesByWildcard", String[].class);
        method.invoke(xstream, (Object) ALLOWED);
    }
}
