import { createContext, useCallback, useContext, useMemo, useState, type ReactNode } from "react";
import { queryClient } from "@/app/provider";
import { can, readSession, writeSession, type Ability, type Session } from "./session";

interface AuthValue {
  session: Session | null;
  signIn: (session: Session) => void;
  signOut: () => void;
  can: (ability: Ability) => boolean;
}

const AuthContext = createContext<AuthValue | null>(null);

export function AuthProvider({ children }: { children: ReactNode }) {
  const [session, setSession] = useState<Session | null>(() => readSession());
  const signIn = useCallback((next: Session) => {
    writeSession(next);
    queryClient.clear(); // what one role saw is not another's
    setSession(next);
  }, []);
  const signOut = useCallback(() => {
    writeSession(null);
    queryClient.clear();
    setSession(null);
  }, []);
  const value = useMemo(
    () => ({ session, signIn, signOut, can: (a: Ability) => can(session, a) }),
    [session, signIn, signOut],
  );
  return <AuthContext.Provider value={value}>{children}</AuthContext.Provider>;
}

export function useAuth(): AuthValue {
  const value = useContext(AuthContext);
  if (!value) throw new Error("useAuth outside AuthProvider");
  return value;
}
